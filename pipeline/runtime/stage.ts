import { z } from "zod";
import { ConfigError } from "./errors.js";
import type { Logger } from "./log.js";

// Declarative stages. A stage module exports a StageSpec: the port it consumes
// and the port it emits (each carries the TypeScript type of the data, so the
// compiler checks a chain built with `chain()`), its options as a zod schema
// (type, default, one-line doc), how its failures are treated, and a factory.
// The runtime (pipeline/runtime/worker.ts) knows nothing else about a stage: it
// validates the options, checks that the chain connects, runs every stage on
// each batch in order and owns retries, lanes, health and shutdown.
//
// Stages up to the first `sequential` one form the "prepare" part that the
// runtime runs one batch ahead (read + decode of batch N+1 overlap the
// COPY/COMMIT of batch N); sequential stages are entered strictly in batch
// order, each by at most `concurrency` batches at a time.

/** A named, typed connection point between two stages. */
export interface Port<T> {
  readonly name: string;
  /** Phantom: carries T for the compiler; never set. */
  readonly __type?: T;
}

export function port<T>(name: string): Port<T> {
  return { name };
}

/** Why an entry is a dead letter. `cause` groups repeats of one cause (counted, not stored one by one). */
export interface DeadLetter {
  reason: string;
  cause?: string;
  /** Set by the runtime for an entry past its delivery limit: it was not decoded. */
  overLimit?: boolean;
}

/**
 * The envelope of one read batch, owned by the runtime: which stream entries,
 * their fields and delivery counts, and the verdict on each entry that is not
 * simply written (dead-lettered, or acknowledged without a row).
 */
export interface Batch {
  readonly seq: number;
  /** Stream entry ids, in stream order. */
  readonly ids: readonly string[];
  /** Flat field lists [k, v, k, v, ...]; null when the entry was deleted from the stream. */
  readonly fields: readonly (readonly string[] | null)[];
  /** Delivery count per entry when known (pending/claimed reads), else null (first delivery). */
  readonly deliveries: readonly number[] | null;
  /** Entries to dead-letter (index → why); none of their rows is written. */
  readonly dead: Map<number, DeadLetter>;
  /** Entries to acknowledge without writing or dead-lettering (deleted from the stream, or already stored). */
  readonly skip: Set<number>;
}

/** True when the entry has a verdict already (dead letter or skip): later stages leave it alone. */
export function settled(batch: Batch, index: number): boolean {
  return batch.dead.has(index) || batch.skip.has(index);
}

/** A field of an entry ("ts", "id", "data", "iface", "src"), or undefined. */
export function entryField(batch: Batch, index: number, name: string): string | undefined {
  const f = batch.fields[index];
  if (!f) return undefined;
  for (let i = 0; i + 1 < f.length; i += 2) if (f[i] === name) return f[i + 1];
  return undefined;
}

export interface Backoff {
  baseMs: number;
  maxMs: number;
}

/** How the runtime treats an error a stage throws. */
export interface FailurePolicy {
  /**
   * "retry": an outage (the data is fine, a dependency is not): the batch is
   * kept unacknowledged and retried with backoff, health says why.
   * "fatal": the service stops with a non-zero exit (systemd restarts it; the
   * entries stay pending and count a delivery).
   */
  classify(err: unknown): "retry" | "fatal";
  /** One line naming the cause, for health and logs. */
  describe(err: unknown): string;
  backoff: Backoff;
}

/** What the runtime hands every stage at creation. Dependencies come through the stage's own factory. */
export interface StageContext {
  log: Logger;
  /** Aborted when the service begins to stop (a stage that holds work, e.g. a buffer, starts its bounded drain). */
  stopping?: AbortSignal;
}

/**
 * One running stage. `E` is the envelope the runtime passes with each unit of
 * work: the worker's Batch (stream entries and their verdicts), or the
 * scanner's SourceEnvelope (one chunk of the source, pipeline/runtime/scanner.ts).
 */
export interface StageInstance<I, O, E = Batch> {
  process(batch: E, input: I): O | Promise<O>;
  /** Sequential stages: how many batches may be in `process` at once (default 1). */
  concurrency?: number;
  /** Counters the stage keeps about itself (rows written, fallbacks, ...), shown in health and summaries. */
  counters?(): Record<string, number>;
  /** After the last unit of work (in chain order); a rejection is the service's failure. */
  close?(): Promise<void> | void;
}

/** The options of a stage: a zod object whose fields carry a default and a `.describe()` line. */
export type OptionsSchema = z.ZodObject<z.ZodRawShape>;

export interface StageSpec<I, O, S extends OptionsSchema = OptionsSchema, E = Batch> {
  name: string;
  consumes: Port<I>;
  emits: Port<O>;
  /** Runs in batch order (writes, acks). */
  sequential?: boolean;
  options: S;
  failure: FailurePolicy;
  create(ctx: StageContext, options: z.output<S>): StageInstance<I, O, E> | Promise<StageInstance<I, O, E>>;
}

/** A stage in a chain with the options it is given (validated against its schema at start-up). */
export interface StageUse<I, O, E = Batch> {
  spec: StageSpec<I, O, OptionsSchema, E>;
  options: unknown;
}

export function use<I, O, S extends OptionsSchema, E = Batch>(
  spec: StageSpec<I, O, S, E>,
  options: z.input<S>,
): StageUse<I, O, E> {
  return { spec, options };
}

/** A list of stages from `input` on; `pipe` only accepts a stage that consumes what the last one emits. */
export interface Chain<I, O, E = Batch> {
  readonly input: Port<I>;
  readonly stages: readonly StageUse<unknown, unknown, E>[];
  pipe<N>(next: StageUse<O, N, E>): Chain<I, N, E>;
}

/** A chain from `input` on; `E` is the runtime's envelope (the worker's Batch unless said otherwise). */
export function chain<I, E = Batch>(input: Port<I>): Chain<I, I, E> {
  const make = <O>(stages: readonly StageUse<unknown, unknown, E>[]): Chain<I, O, E> => ({
    input,
    stages,
    pipe: <N>(next: StageUse<O, N, E>) => make<N>([...stages, next]),
  });
  return make<I>([]);
}

/**
 * Check at start-up that each stage consumes what the one before it emits (a
 * chain assembled from a list is not seen by the compiler); returns the chain
 * as text. ConfigError names both ends of a wrong link.
 */
export function checkChain<E>(
  input: Port<unknown>,
  stages: readonly StageUse<unknown, unknown, E>[],
  source = "the stream reader",
): string {
  let flowing = input.name;
  let from = source;
  for (const { spec } of stages) {
    if (spec.consumes.name !== flowing)
      throw new ConfigError(
        `wrong stage chain: stage "${spec.name}" consumes "${spec.consumes.name}" but ${from} emits "${flowing}"`,
      );
    flowing = spec.emits.name;
    from = `stage "${spec.name}"`;
  }
  return [input.name, ...stages.map((s) => `${s.spec.name} → ${s.spec.emits.name}`)].join(" → ");
}

function optionProblems(spec: { name: string; options: OptionsSchema }, given: unknown) {
  const parsed = spec.options.strict().safeParse(given ?? {});
  if (parsed.success) return { data: parsed.data as z.output<OptionsSchema>, lines: [] };
  const lines = parsed.error.issues.flatMap((i) => {
    const keys = i.code === "unrecognized_keys" ? i.keys : [i.path.join(".")];
    return keys.map((k) => `  stage "${spec.name}", option "${k}": ${i.message}`);
  });
  return { data: undefined, lines };
}

/** Validate a stage's options against its schema; ConfigError names the stage and each wrong option. */
export function stageOptions<S extends OptionsSchema>(spec: { name: string; options: S }, given: unknown): z.output<S> {
  const { data, lines } = optionProblems(spec, given);
  if (lines.length) throw new ConfigError(`invalid stage options:\n${lines.join("\n")}`);
  return data as z.output<S>;
}

/** The options of every stage of a chain, validated; one ConfigError names every wrong option of every stage. */
export function chainOptions<E>(stages: readonly StageUse<unknown, unknown, E>[]): z.output<OptionsSchema>[] {
  const checked = stages.map((u) => optionProblems(u.spec, u.options));
  const lines = checked.flatMap((c) => c.lines);
  if (lines.length) throw new ConfigError(`invalid stage options:\n${lines.join("\n")}`);
  return checked.map((c) => c.data ?? {});
}

/** The options of a spec as documentation lines: name, type default, description. */
export function describeOptions(spec: { name: string; options: OptionsSchema }): string[] {
  return Object.entries(spec.options.shape).map(([k, s]) => {
    const schema = s as z.ZodType;
    const def = schema.safeParse(undefined);
    return `${spec.name}.${k}${def.success ? ` (default ${JSON.stringify(def.data)})` : ""}: ${schema.description ?? ""}`;
  });
}

/** The empty options schema, for stages without options. */
export const noOptions = z.object({});
