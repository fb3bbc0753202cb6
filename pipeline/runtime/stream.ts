import type { Redis } from "ioredis";

// The consumer-group side of the raw stream: group creation, reads of own
// pending entries and of new ones, claims, delivery counts. Replies are kept
// as the flat field arrays Redis returns (no per-entry objects).

export type StreamEntries = { ids: string[]; fields: (string[] | null)[] };

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

type RawEntry = [string, string[] | null];

function split(entries: RawEntry[] | null | undefined): StreamEntries {
  const ids: string[] = [];
  const fields: (string[] | null)[] = [];
  for (const [id, f] of entries ?? []) {
    ids.push(id);
    fields.push(f);
  }
  return { ids, fields };
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
  const reply = (await redis.call("XREADGROUP", ...args)) as [string, RawEntry[]][] | null;
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
  if (wanted.length === 0) return { next, entries: { ids: [], fields: [] }, deliveries: [], missed: 0 };
  const reply = (await redis.call(
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
