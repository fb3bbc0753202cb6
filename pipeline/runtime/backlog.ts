import type { Redis } from "ioredis";

// The age of the oldest entry of the raw stream that the consumer group has
// not acknowledged: pending (delivered, unacked) or not yet delivered. Entry
// ids carry the time of their XADD, so the age is how far behind the database
// is. Four light commands, run when Prometheus scrapes, never per frame.

const idMs = (id: string) => Number(id.slice(0, id.indexOf("-")));

/** Milliseconds since the oldest unacknowledged entry was appended; 0 when every entry is acknowledged. */
export async function oldestUnackedAgeMs(
  redis: Redis,
  stream: string,
  group: string,
  now = Date.now(),
): Promise<number> {
  const candidates: number[] = [];
  let groups: unknown[][];
  try {
    groups = (await redis.xinfo("GROUPS", stream)) as unknown[][];
  } catch {
    groups = []; // no stream yet
  }
  const g = groups
    .map((flat) => {
      const o: Record<string, unknown> = {};
      for (let i = 0; i + 1 < flat.length; i += 2) o[String(flat[i])] = flat[i + 1];
      return o;
    })
    .find((o) => o.name === group);
  if (!g) {
    // without the group nothing is acknowledged: the oldest entry counts
    const first = (await redis.xrange(stream, "-", "+", "COUNT", 1))[0];
    return first ? Math.max(0, now - idMs(first[0])) : 0;
  }
  if (Number(g.pending ?? 0) > 0) {
    const summary = (await redis.xpending(stream, group)) as [number, string | null, string | null, unknown];
    if (summary[1]) candidates.push(idMs(summary[1]));
  }
  const lag = g.lag === null || g.lag === undefined ? null : Number(g.lag);
  if (lag === null || lag > 0) {
    const next = (await redis.xrange(stream, `(${String(g["last-delivered-id"] ?? "0-0")}`, "+", "COUNT", 1))[0];
    if (next) candidates.push(idMs(next[0]));
  }
  return candidates.length ? Math.max(0, now - Math.min(...candidates)) : 0;
}
