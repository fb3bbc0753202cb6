import type { Redis } from "ioredis";

// The consumer-group side of the raw stream: group creation, reads of own
// pending entries and of new ones, claims, delivery counts. The entries' fields
// are read as bytes and kept in one buffer per read (FieldTable): a batch of
// 5 000 entries of ~11 bulk strings each was 55 000 strings made from the
// reply's Buffers, kept alive until the batch was acknowledged, which cost as
// much CPU as parsing the reply and most of the worker's garbage collection.

/** Whether `b[from, to)` holds exactly the ASCII text `s`. */
function bytesAt(b: Uint8Array, from: number, to: number, s: string): boolean {
  if (to - from !== s.length) return false;
  for (let k = 0; k < s.length; k++) if (b[from + k] !== s.charCodeAt(k)) return false;
  return true;
}

/**
 * The flat field lists [k, v, k, v, ...] of a batch of stream entries, as
 * bytes: field f of the batch spans bytes[at[f], at[f + 1]); entry i has the
 * fields first[i] .. first[i + 1] - 1; an entry deleted from the stream (its
 * id listed, its fields nil) has none and is `deleted`. The decode stage reads
 * the bytes directly; everything else asks by entry and name.
 */
export class FieldTable {
  constructor(
    readonly bytes: Uint8Array,
    readonly at: Uint32Array,
    readonly first: Uint32Array,
    private readonly gone: Uint8Array,
  ) {}

  /** Field lists given as strings or Buffers (null = deleted entry): tests, tools, the reader. */
  static of(lists: readonly (readonly (string | Uint8Array)[] | null)[]): FieldTable {
    const n = lists.length;
    let fields = 0;
    let size = 0;
    for (const l of lists)
      if (l) {
        fields += l.length;
        for (const v of l) size += typeof v === "string" ? Buffer.byteLength(v, "utf8") : v.length;
      }
    const bytes = Buffer.allocUnsafe(size);
    const at = new Uint32Array(fields + 1);
    const first = new Uint32Array(n + 1);
    const gone = new Uint8Array(n);
    let f = 0;
    let o = 0;
    for (let i = 0; i < n; i++) {
      first[i] = f;
      const l = lists[i];
      if (!l) {
        gone[i] = 1;
        continue;
      }
      for (const v of l) {
        at[f++] = o;
        if (typeof v === "string") o += bytes.write(v, o, "utf8");
        else {
          // a loop beats set() for these few bytes each (a native call per field)
          for (let k = 0; k < v.length; k++) bytes[o + k] = v[k]!;
          o += v.length;
        }
      }
    }
    first[n] = f;
    at[f] = o;
    return new FieldTable(bytes, at, first, gone);
  }

  /** Number of entries. */
  get length(): number {
    return this.gone.length;
  }

  /** True when the entry was deleted from the stream (no fields). */
  deleted(i: number): boolean {
    return this.gone[i] === 1;
  }

  /** Index (into `at`) of the value of field `name` of entry i, or -1. */
  find(i: number, name: string): number {
    const { bytes, at } = this;
    for (let f = this.first[i]!; f + 1 < this.first[i + 1]!; f += 2)
      if (bytesAt(bytes, at[f]!, at[f + 1]!, name)) return f + 1;
    return -1;
  }

  /** Whether field f holds exactly the ASCII text `s`. */
  is(f: number, s: string): boolean {
    return bytesAt(this.bytes, this.at[f]!, this.at[f + 1]!, s);
  }

  /** Field f as bytes (a view). */
  raw(f: number): Buffer {
    return Buffer.from(this.bytes.buffer, this.bytes.byteOffset + this.at[f]!, this.at[f + 1]! - this.at[f]!);
  }

  /** The value of field `name` of entry i as text, or undefined. */
  text(i: number, name: string): string | undefined {
    const f = this.find(i, name);
    return f < 0 ? undefined : this.raw(f).toString("utf8");
  }

  /** All fields of entry i as bytes (a dead letter carries them unchanged), or null when deleted. */
  entry(i: number): Buffer[] | null {
    if (this.deleted(i)) return null;
    const out: Buffer[] = [];
    for (let f = this.first[i]!; f < this.first[i + 1]!; f++) out.push(this.raw(f));
    return out;
  }
}

export type StreamEntries = { ids: string[]; fields: FieldTable };

/** XGROUP CREATE … 0 MKSTREAM: from the start of the stream, so entries appended before the group exist are read too. */
export async function ensureGroup(redis: Redis, stream: string, group: string): Promise<boolean> {
  try {
    await redis.xgroup("CREATE", stream, group, "0", "MKSTREAM");
    return true;
  } catch (err) {
    if ((err as Error).message.startsWith("BUSYGROUP")) return false;
    throw err;
  }
}

export function isNoGroup(err: unknown): boolean {
  return err instanceof Error && err.message.startsWith("NOGROUP");
}

type RawEntry = [Buffer, Buffer[] | null];

function split(entries: RawEntry[] | null | undefined): StreamEntries {
  const list = entries ?? [];
  const ids = new Array<string>(list.length);
  const fields = new Array<Buffer[] | null>(list.length);
  for (let i = 0; i < list.length; i++) {
    const e = list[i]!;
    ids[i] = e[0].toString("latin1"); // stream ids are ASCII
    fields[i] = e[1];
  }
  // the reply's Buffers die here, young: only the table lives on with the batch
  return { ids, fields: FieldTable.of(fields) };
}

/** XREADGROUP from `cursor` ("0"-style id = own pending after it, ">" = new). block = ms or null. */
export async function readGroup(
  redis: Redis,
  stream: string,
  group: string,
  consumer: string,
  cursor: string,
  count: number,
  blockMs: number | null,
): Promise<StreamEntries> {
  const args: (string | number)[] = ["GROUP", group, consumer, "COUNT", count];
  if (blockMs !== null) args.push("BLOCK", blockMs);
  args.push("STREAMS", stream, cursor);
  const reply = (await redis.callBuffer("XREADGROUP", ...args)) as [Buffer, RawEntry[]][] | null;
  return split(reply?.[0]?.[1]);
}

/**
 * One claim step: entries pending for longer than minIdleMs, taken over from
 * whichever consumer holds them, except those `held` (this consumer is still
 * working on them: claiming them would count a delivery that is no real
 * attempt). XPENDING … IDLE lists them, XCLAIM takes them (its min-idle-time
 * makes a race with another claimer harmless). Returns the next cursor ("0-0"
 * = the end of the pending list was reached), the claimed entries with their
 * delivery counts (this claim included), and how many listed entries could not
 * be claimed (trimmed from the stream, or taken by another consumer meanwhile).
 */
export async function claimIdle(
  redis: Redis,
  stream: string,
  group: string,
  consumer: string,
  minIdleMs: number,
  cursor: string,
  count: number,
  held: { has(id: string): boolean },
): Promise<{ next: string; entries: StreamEntries; deliveries: number[]; missed: number }> {
  const start = cursor === "0-0" ? "-" : `(${cursor}`;
  const pending = (await redis.call("XPENDING", stream, group, "IDLE", minIdleMs, start, "+", count)) as [
    string,
    string,
    number,
    number,
  ][];
  const next = pending.length < count ? "0-0" : pending[pending.length - 1]![0];
  const wanted = pending.filter((p) => !(p[1] === consumer && held.has(p[0])));
  if (wanted.length === 0) return { next, entries: { ids: [], fields: FieldTable.of([]) }, deliveries: [], missed: 0 };
  const reply = (await redis.callBuffer(
    "XCLAIM",
    stream,
    group,
    consumer,
    minIdleMs,
    ...wanted.map((p) => p[0]),
  )) as (RawEntry | null)[];
  const entries = split(reply.filter((e): e is RawEntry => e !== null));
  const before = new Map(wanted.map((p) => [p[0], Number(p[3])]));
  const deliveries = entries.ids.map((id) => (before.get(id) ?? 0) + 1);
  return { next, entries, deliveries, missed: wanted.length - entries.ids.length };
}

/** Delivery counts of own pending entries between the batch's first and last id. */
export async function deliveryCounts(
  redis: Redis,
  stream: string,
  group: string,
  consumer: string,
  ids: readonly string[],
): Promise<number[]> {
  if (ids.length === 0) return [];
  const reply = (await redis.call("XPENDING", stream, group, ids[0]!, ids[ids.length - 1]!, ids.length, consumer)) as [
    string,
    string,
    number,
    number,
  ][];
  const byId = new Map(reply.map((r) => [r[0], Number(r[3])]));
  return ids.map((id) => byId.get(id) ?? 1);
}

/**
 * Reset the idle time of entries we still hold, so that no other worker claims
 * them while we work (XCLAIM … JUSTID does not raise the delivery count).
 */
export async function touch(
  redis: Redis,
  stream: string,
  group: string,
  consumer: string,
  ids: readonly string[],
): Promise<void> {
  if (ids.length === 0) return;
  await redis.call("XCLAIM", stream, group, consumer, 0, ...ids, "JUSTID");
}

/** Number of entries pending in the group (all consumers); 0 when the group does not exist. */
export async function pendingCount(redis: Redis, stream: string, group: string): Promise<number> {
  try {
    const reply = (await redis.call("XPENDING", stream, group)) as [number, ...unknown[]];
    return Number(reply[0]);
  } catch (err) {
    if (isNoGroup(err)) return 0;
    throw err;
  }
}

/**
 * Append entries to the raw stream in pipelined chunks (fields ts, id, data,
 * iface, and ext / src when given, as in pipeline/runtime/keys.ts); returns the entry ids in order. Used by tests
 * and benchmarks to pre-fill a stream quickly; the scanner has its own buffered
 * appender (stages/stream-append.ts).
 */
export async function appendEntries(
  redis: Redis,
  stream: string,
  entries: readonly {
    ts: string;
    id: number | string;
    data: string;
    iface?: string;
    ext?: boolean;
    src?: "socketcan" | "simulator" | "replay";
  }[],
  chunk = 2_000,
): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < entries.length; i += chunk) {
    const p = redis.pipeline();
    for (const e of entries.slice(i, i + chunk)) {
      const more: string[] = [];
      if (e.ext) more.push("ext", "1");
      if (e.src) more.push("src", e.src);
      p.xadd(stream, "*", "ts", e.ts, "id", String(e.id), "data", e.data, "iface", e.iface ?? "test0", ...more);
    }
    const res = await p.exec();
    for (const [err, id] of res ?? []) {
      if (err) throw err;
      ids.push(id as string);
    }
  }
  return ids;
}
