import { Health } from "./health.js";
import type { Logger } from "./log.js";
import { backoffDelay, sleep } from "./retry.js";
import { type Chain, chainOptions, checkChain } from "./stage.js";
import { type StartedStage, startParts } from "./start-parts.js";
import type { Component } from "./worker-contract.js";

// The scanner runtime: pumps a source's chunks through a declared chain of
// stages, the same stage model as the worker's (pipeline/runtime/worker.ts):
// every stage's options are validated against its zod schema and the links of
// the chain are checked before anything is created, and the chain is logged
// at start-up. Each chunk goes through every stage in order and the next chunk
// is taken only when the last stage has returned, so a stage that waits (a
// full buffer) holds the source back.
//
// Stopping: stop() aborts the stages' `stopping` signal (a stage holding work
// starts its bounded drain) and ends the pump after the current chunk. When the
// source ends by itself, `ended()` says whether that is a failure (a live bus
// that goes away); a failure also aborts `stopping`. Then every stage is
// closed in chain order; the first error (the source's, a stage's, a close's)
// is the run's failure. A stage's error is judged by its failure policy: an
// outage ("retry") is logged once per cause and the same chunk retried with
// backoff until it passes or the scanner stops; "fatal" fails the run. The
// runtime knows no domain: which source, what a chunk holds and what happens
// to it belong to the stages. Domain work beside the chain (the command
// transmitter) is a declared Component, as in the worker: started before the
// first chunk, stopped after the stages have closed; its problems go to the
// shared Health that the stage publishing the health key reads.

/** What the runtime hands each stage with one chunk of the source. */
export interface SourceEnvelope {
  /** 1, 2, ... in source order. */
  readonly seq: number;
  /** True when the source can wait (a replayed file); false when it cannot (a live bus: its overflow is dropped). */
  readonly pausable: boolean;
}

export interface ChunkSource<T> {
  /** For logs, e.g. "socketcan:can0". */
  name: string;
  pausable: boolean;
  chunks(): AsyncIterable<T>;
  /** Stop producing (the pending iteration ends). */
  close(): void;
  /** Called when the chunks end without a stop: the error when such an end is a failure, else null. */
  ended(): Error | null;
}

export interface ScannerDeps<T> {
  log: Logger;
  source: ChunkSource<T>;
  chain: Chain<T, unknown, SourceEnvelope>;
  /** Run beside the chain: started before the first chunk, stopped after the stages have closed. */
  components?: readonly Component[];
  /** Where the components' problems go (a stage that publishes health reads it); default a new one. */
  health?: Health;
}

export interface ScannerResult {
  /** "end": the source finished; "stop": stop() was called. */
  reason: "end" | "stop";
  chunks: number;
  /** Counters of every stage that keeps some, by stage name. */
  stages: Record<string, Record<string, number>>;
}

export interface ScannerHandle {
  /** Resolves when the source ended or after stop(), every stage closed; rejects with the run's failure. */
  done: Promise<ScannerResult>;
  /** Stop reading; the stages drain within their own bounds. Resolves (or rejects) as `done`. */
  stop(): Promise<ScannerResult>;
  /** The chain as one line, as logged at start-up. */
  description: string;
}

type Running = StartedStage<SourceEnvelope>;

/** Validate and create the chain (a wrong option or link throws ConfigError naming it), then run it. */
export async function startScanner<T>(deps: ScannerDeps<T>): Promise<ScannerHandle> {
  const { log, source } = deps;
  const options = chainOptions(deps.chain.stages);
  const description = checkChain(deps.chain.input, deps.chain.stages, "the frame source");
  log.info({ chain: description }, "stage chain");

  const stopper = new AbortController();
  let stopRequested = false;
  const instances: Running[] = [];
  const components: Component[] = [];
  const health = deps.health ?? new Health(log);
  const stopComponents = async () => {
    for (const c of components.reverse()) await c.stop();
    components.length = 0;
  };
  try {
    await startParts(
      { components: deps.components, stages: deps.chain.stages, options, log, health, signal: stopper.signal },
      { components, stages: instances },
    );
  } catch (err) {
    for (const s of instances) await s.stage.close?.();
    await stopComponents();
    throw err;
  }

  const counters = () => {
    const out: Record<string, Record<string, number>> = {};
    for (const s of instances) if (s.stage.counters) out[s.spec.name] = s.stage.counters();
    return out;
  };

  /** One stage on one chunk under its failure policy. */
  const processUnderPolicy = async (s: Running, env: SourceEnvelope, data: unknown): Promise<unknown> => {
    let cause: string | null = null;
    for (let attempt = 0; ; attempt++) {
      try {
        const out = await s.stage.process(env, data);
        if (cause) log.info({ stage: s.spec.name, cause }, "recovered");
        return out;
      } catch (err) {
        if (s.spec.failure.classify(err) === "fatal" || stopper.signal.aborted) throw err;
        const now = s.spec.failure.describe(err);
        if (now !== cause)
          log.warn({ stage: s.spec.name, cause: now, seq: env.seq }, "degraded: retrying until it recovers");
        cause = now;
        await sleep(backoffDelay(s.spec.failure.backoff, attempt), stopper.signal);
        if (stopper.signal.aborted) throw err;
      }
    }
  };

  const run = async (): Promise<ScannerResult> => {
    let failure: unknown = null;
    let seq = 0;
    try {
      for await (const chunk of source.chunks()) {
        const env: SourceEnvelope = { seq: ++seq, pausable: source.pausable };
        let data: unknown = chunk;
        for (const s of instances) data = await processUnderPolicy(s, env, data);
        if (stopper.signal.aborted) break;
      }
      if (!stopper.signal.aborted) failure = source.ended();
    } catch (err) {
      failure = err;
    }
    // a failure drains like a stop (bounded), then fails the run
    if (failure) stopper.abort();
    for (const s of instances) {
      try {
        await s.stage.close?.();
      } catch (err) {
        failure ??= err;
      }
    }
    try {
      await stopComponents();
    } catch (err) {
      failure ??= err;
    }
    if (failure) throw failure;
    return { reason: stopRequested ? "stop" : "end", chunks: seq, stages: counters() };
  };

  const done = run();
  // the caller awaits `done`; this keeps a failure from also counting as an unhandled rejection meanwhile
  done.catch(() => undefined);
  return {
    done,
    description,
    stop() {
      if (!stopRequested) {
        stopRequested = true;
        stopper.abort();
        source.close();
      }
      return done;
    },
  };
}
