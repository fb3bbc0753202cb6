import type { Redis } from "ioredis";
import type { Health } from "./health.js";
import type { Logger } from "./log.js";
import { backoffDelay, sleep } from "./retry.js";
import { claimIdle, deliveryCounts, ensureGroup, isNoGroup, readGroup, type StreamEntries, touch } from "./stream.js";

// The reader of a consumer group: this consumer's own pending entries first
// (left by an earlier run under the same name), then new ones, and now and then
// entries that another consumer has left idle for longer than claimIdleMs.
// Every entry it hands out is "held" until the caller releases it (acknowledged,
// or abandoned at a stop); a timer keeps held entries fresh (XCLAIM JUSTID
// resets their idle time without counting a delivery), so a batch that waits
// for a slow or absent database is not claimed away and redelivered.

export interface ReaderOptions {
  stream: string;
  group: string;
  consumer: string;
  batchSize: number;
  /** Longest wait of a blocking read for new entries. */
  flushMs: number;
  /** An entry idle this long in another consumer's hands is claimed. */
  claimIdleMs: number;
}

export interface ReadBatch extends StreamEntries {
  /** Delivery count per entry (this delivery included) when it is not a first delivery, else null. */
  deliveries: number[] | null;
}

export class StreamReader {
  private cursor = "0"; // own pending first, then ">"
  private claimCursor = "0-0";
  private nextClaimAt: number;
  private readonly claimEveryMs: number;
  /** The id lists next() handed out and release() has not taken back: per batch, not per entry (no Set of 5 000 ids per batch). */
  private readonly held = new Set<readonly string[]>();
  private heldCount = 0;
  private readonly keeper: NodeJS.Timeout;
  private readonly blocking: Redis;
  claimed = 0;

  constructor(
    private readonly redis: Redis,
    private readonly o: ReaderOptions,
    private readonly log: Logger,
    private readonly health: Health,
    private readonly signal: AbortSignal,
  ) {
    // blocking reads get their own connection so that acks never wait behind a BLOCK
    this.blocking = redis.duplicate();
    this.blocking.on("error", () => undefined); // reconnects itself; the main client logs outages
    this.nextClaimAt = Date.now() + Math.min(o.claimIdleMs, 5_000);
    this.claimEveryMs = Math.max(500, Math.min(30_000, Math.floor(o.claimIdleMs / 2)));
    const freshEveryMs = Math.max(100, Math.min(10_000, Math.floor(o.claimIdleMs / 3)));
    this.keeper = setInterval(() => void this.keepFresh(), freshEveryMs);
  }

  /** Entries handed out and not yet released. */
  get holding(): number {
    return this.heldCount;
  }

  /** Release a batch: `ids` is the very array next() returned with it. */
  release(ids: readonly string[]): void {
    if (this.held.delete(ids)) this.heldCount -= ids.length;
  }

  /** Whether an id is held, for a claim step (rare: only when this consumer's own entries are listed idle). */
  private heldIds(): { has(id: string): boolean } {
    let ids: Set<string> | null = null;
    return {
      has: (id) => {
        ids ??= new Set([...this.held].flat());
        return ids.has(id);
      },
    };
  }

  close(): void {
    clearInterval(this.keeper);
    this.blocking.disconnect();
  }

  private async keepFresh(): Promise<void> {
    if (this.heldCount === 0) return;
    const ids = [...this.held].flat();
    try {
      for (let i = 0; i < ids.length; i += 1_000)
        await touch(this.redis, this.o.stream, this.o.group, this.o.consumer, ids.slice(i, i + 1_000));
    } catch (err) {
      // Redis is down: the reads and acks report it; entries cannot be claimed by anyone meanwhile either
      this.log.debug({ err: (err as Error).message }, "keeping held entries fresh failed");
    }
  }

  /** The next batch, or null once stopped. Stream errors are retried with backoff (health says so). */
  async next(): Promise<ReadBatch | null> {
    const o = this.o;
    for (let attempt = 0; !this.signal.aborted; attempt++) {
      try {
        const r = await this.readOnce();
        this.health.recover("stream");
        if (r === "again") {
          attempt = -1;
          continue;
        }
        if (r.ids.length) {
          this.held.add(r.ids);
          this.heldCount += r.ids.length;
        }
        return r;
      } catch (err) {
        if (isNoGroup(err)) {
          this.log.warn({ group: o.group }, "consumer group missing; re-creating it");
          await ensureGroup(this.redis, o.stream, o.group).catch((e: Error) =>
            this.log.warn({ err: e.message }, "group create failed"),
          );
          this.cursor = "0";
          continue;
        }
        this.health.degrade("stream", `redis: ${(err as Error).message}`);
        await sleep(backoffDelay({ baseMs: 100, maxMs: 5_000 }, attempt), this.signal);
      }
    }
    return null;
  }

  private async readOnce(): Promise<ReadBatch | "again"> {
    const o = this.o;
    if (Date.now() >= this.nextClaimAt) {
      const r = await claimIdle(
        this.redis,
        o.stream,
        o.group,
        o.consumer,
        o.claimIdleMs,
        this.claimCursor,
        o.batchSize,
        this.heldIds(),
      );
      this.claimCursor = r.next;
      if (r.next === "0-0") this.nextClaimAt = Date.now() + this.claimEveryMs;
      if (r.missed)
        this.log.warn({ missed: r.missed }, "idle entries not claimed: trimmed from the stream or taken meanwhile");
      if (r.entries.ids.length) {
        this.claimed += r.entries.ids.length;
        this.log.info({ entries: r.entries.ids.length }, "claimed idle entries from another consumer");
        return { ...r.entries, deliveries: r.deliveries };
      }
    }
    if (this.cursor !== ">") {
      const r = await readGroup(this.blocking, o.stream, o.group, o.consumer, this.cursor, o.batchSize, null);
      if (r.ids.length === 0) {
        this.cursor = ">";
        return "again";
      }
      this.cursor = r.ids[r.ids.length - 1]!;
      const deliveries = await deliveryCounts(this.redis, o.stream, o.group, o.consumer, r.ids);
      return { ...r, deliveries };
    }
    const r = await readGroup(this.blocking, o.stream, o.group, o.consumer, ">", o.batchSize, o.flushMs);
    return r.ids.length ? { ...r, deliveries: null } : "again";
  }
}
