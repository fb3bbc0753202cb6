import type { Redis } from "ioredis";
import type { Logger } from "../../pipeline/runtime/log.js";
import { type CanEntry, entryFields } from "./entry.js";
import type { IngestLedger, Unwritten } from "./ledger.js";
import { readSpool, removeSpool, writeSpool } from "./spool.js";
import type { StreamUpkeep } from "./upkeep.js";

// The appender's buffer: entries wait in a bounded in-memory buffer and are
// appended in order, XADD in pipelined chunks (never MAXLEN on XADD: that
// would drop unacknowledged entries; trimming is the upkeep's job).
//
// While Redis is down the buffer holds up to `buffer` entries; every entry
// beyond that is counted in dropped_buffer (exactly; written when Redis is
// back). While Redis is up and the source can wait, a full buffer makes
// offer() wait. On stop the buffer is flushed for a bounded time; what Redis
// did not take by then is written to the spool file with the counters not yet
// written, and the next start appends it first.

export interface AppenderDeps {
  redis: Redis;
  stream: string;
  statsKey: string;
  ledger: IngestLedger;
  log: Logger;
  spoolFile: string;
  /** Which Redis and stream the spool is for (spoolTarget()). */
  spoolTarget: string;
  upkeep: StreamUpkeep;
}

export interface AppenderLimits {
  buffer: number;
  chunk: number;
  trimEveryAppends: number;
  stopFlushMs: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const TIMEOUT = Symbol("timeout");
const STOPPED = Symbol("stopped");
type Outcome<T> = { ok: true; value: T } | { ok: false; err: unknown };

/** Counters of a spool file are added once per file, even when its frames are appended twice. */
const ADD_ONCE = `
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', 2592000) then
  for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
  return 1
end
return 0`;

export class Appender {
  private buf: CanEntry[] = [];
  private head = 0;
  /** Counters of a loaded spool file, written once (ADD_ONCE) with its id. */
  private spoolCounters: { id: string; counters: Unwritten } | null = null;
  /** Entries of a loaded spool file not yet appended; the file is removed when this reaches 0. */
  private spoolLeft = 0;
  private spoolOnDisk = false;
  private sourceDone = false;
  private stopping = false;
  private stopDeadline: Promise<typeof TIMEOUT> | null = null;
  /** Waits interrupted by stop() (one entry per wait in progress, removed when it ends). */
  private readonly stopWaiters = new Set<() => void>();
  private wakeFlusher: (() => void) | null = null;
  private wakeProducer: (() => void) | null = null;
  private flusher: Promise<void> | null = null;
  private flushFailure: Error | null = null;

  constructor(
    private readonly d: AppenderDeps,
    private readonly limits: AppenderLimits,
  ) {}

  get size(): number {
    return this.buf.length - this.head;
  }

  redisUp(): boolean {
    return this.d.redis.status === "ready";
  }

  /** Load a previous run's spool (its entries go first) and start appending. */
  start(): void {
    this.loadSpool();
    // flushLoop handles its own failures; a bug there must still end the run in order, never as an unhandled rejection
    this.flusher = this.flushLoop().catch((err: Error) => {
      this.flushFailure = err;
      this.stop();
    });
  }

  /** Take entries. Waits for room while Redis is up and the source can wait. */
  async offer(entries: CanEntry[], pausable: boolean): Promise<void> {
    const cap = this.limits.buffer;
    const { stats, unwritten } = this.d.ledger;
    while (pausable && this.size + entries.length > cap && this.redisUp() && !this.stopping) {
      await new Promise<void>((r) => {
        this.wakeProducer = r;
        setTimeout(r, 200);
      });
    }
    stats.read += entries.length;
    const take = Math.min(Math.max(0, cap - this.size), entries.length);
    for (let i = 0; i < take; i++) this.buf.push(entries[i]!);
    if (take < entries.length) {
      const lost = entries.length - take;
      stats.droppedBuffer += lost;
      unwritten.dropped_buffer += lost;
      this.d.log.error(
        { lost, buffered: this.size },
        "scanner buffer full: frames dropped (counted in dropped_buffer)",
      );
    }
    stats.buffered = this.size;
    this.wakeFlusher?.();
  }

  /** Stop taking; the buffer gets `stopFlushMs` to reach Redis, then finish() spools the rest. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.stopDeadline = new Promise((r) => setTimeout(() => r(TIMEOUT), this.limits.stopFlushMs));
    for (const w of [...this.stopWaiters]) w();
    this.wakeFlusher?.();
    this.wakeProducer?.();
  }

  /** After the source's last entry: append the rest (bounded when stopping), spool what is left; frames spooled. */
  async finish(): Promise<number> {
    this.sourceDone = true;
    this.wakeFlusher?.();
    await this.flusher;
    if (this.flushFailure) throw this.flushFailure;
    if (this.size === 0 && !this.unwrittenLeft()) return 0;
    const entries = this.buf.slice(this.head);
    const { unwritten } = this.d.ledger;
    const counters: Unwritten = {
      dropped_buffer: unwritten.dropped_buffer + (this.spoolCounters?.counters.dropped_buffer ?? 0),
      skipped_lines: unwritten.skipped_lines + (this.spoolCounters?.counters.skipped_lines ?? 0),
    };
    writeSpool(this.d.spoolFile, this.d.spoolTarget, entries, counters);
    this.d.log.warn(
      { file: this.d.spoolFile, frames: entries.length, ...counters },
      "Redis unreachable at stop: buffered frames kept in the spool file; the next start appends them",
    );
    return entries.length;
  }

  private unwrittenLeft(): boolean {
    return this.spoolCounters !== null || this.d.ledger.hasUnwritten();
  }

  /**
   * Append everything buffered, in order. Returns when the source is done and
   * the buffer empty, or on stop when the buffer is empty or the stop deadline
   * passed (the rest is then spooled by finish()). Never rejects.
   */
  private async flushLoop(): Promise<void> {
    const { redis, stream, statsKey, ledger, upkeep } = this.d;
    const { stats, unwritten } = ledger;
    for (let attempt = 0; ; ) {
      if (this.size === 0 && !this.unwrittenLeft()) {
        if (this.sourceDone || this.stopping) return;
        await new Promise<void>((r) => {
          this.wakeFlusher = r;
          setTimeout(r, 100);
        });
        continue;
      }
      const end = Math.min(this.buf.length, this.head + this.limits.chunk);
      const n = end - this.head;
      const p = redis.pipeline();
      if (this.spoolCounters) {
        const { id, counters } = this.spoolCounters;
        p.eval(ADD_ONCE, 2, statsKey, `${statsKey}:spool:${id}`, ...Object.entries(counters).flat());
      }
      for (let i = this.head; i < end; i++) p.xadd(stream, "*", ...entryFields(this.buf[i]!));
      const counters = { ...unwritten };
      if (n) p.hincrby(statsKey, "appended", n);
      for (const [k, v] of Object.entries(counters)) if (v) p.hincrby(statsKey, k, v);
      const res = await this.untilStopDeadline(p.exec());
      // stopping, and Redis did not answer in time: this chunk's fate is unknown, so it
      // is spooled with the rest (appended again at the next start; a duplicate entry
      // writes nothing new downstream)
      if (res === TIMEOUT) return;
      const failed = res.ok ? res.value?.find(([err]) => err) : undefined;
      if (!res.ok || !res.value || failed) {
        const err = res.ok ? (failed?.[0] ?? new Error("pipeline aborted")) : res.err;
        // connection lost mid-chunk: the chunk is sent again (a duplicate entry writes nothing new downstream)
        const delay = Math.min(5_000, 100 * 2 ** Math.min(attempt++, 6));
        this.d.log.warn({ err: (err as Error).message, delay, buffered: this.size }, "append failed; retrying");
        if ((await this.untilStopDeadline(sleep(delay))) === TIMEOUT) return;
        continue;
      }
      attempt = 0;
      this.spoolCounters = null;
      for (const k of Object.keys(counters) as (keyof Unwritten)[]) unwritten[k] -= counters[k];
      this.head = end;
      if (this.head > 65_536 && this.head * 2 > this.buf.length) {
        this.buf = this.buf.slice(this.head);
        this.head = 0;
      }
      this.noteSpoolAppended(n);
      stats.appended += n;
      stats.buffered = this.size;
      if (n) stats.lastAppendAt = new Date().toISOString();
      upkeep.sinceTrim += n;
      this.wakeProducer?.();
      if (upkeep.sinceTrim >= this.limits.trimEveryAppends) await upkeep.trimSafely();
    }
  }

  /** The outcome of `p`, or TIMEOUT once the stop deadline has passed (never before stop()). */
  private async untilStopDeadline<T>(p: Promise<T>): Promise<Outcome<T> | typeof TIMEOUT> {
    const settled = p.then(
      (value): Outcome<T> => ({ ok: true, value }),
      (err: unknown): Outcome<T> => ({ ok: false, err }),
    );
    if (!this.stopDeadline) {
      // not stopping: wait for the outcome, or for stop() (then for the deadline)
      let onStop!: () => void;
      const stopped = new Promise<typeof STOPPED>((r) => {
        onStop = () => r(STOPPED);
      });
      this.stopWaiters.add(onStop);
      try {
        const r = await Promise.race([settled, stopped]);
        if (r !== STOPPED) return r;
      } finally {
        this.stopWaiters.delete(onStop);
      }
    }
    return Promise.race([settled, this.stopDeadline ?? Promise.resolve(TIMEOUT)]);
  }

  /** Entries of a previous run's spool file go first; the file stays until they are all appended. */
  private loadSpool(): void {
    const s = readSpool(this.d.spoolFile, this.d.spoolTarget, this.d.log);
    if (!s) return;
    // ahead of everything (the buffer is empty at start); concat, not a spread: a spool holds up to `buffer` entries
    this.buf = s.entries.concat(this.buf.slice(this.head));
    this.head = 0;
    this.spoolLeft = s.entries.length;
    this.spoolCounters = { id: s.id, counters: s.counters };
    this.spoolOnDisk = true;
    this.d.ledger.stats.buffered = this.size;
    this.d.log.warn(
      { file: this.d.spoolFile, frames: s.entries.length, ...s.counters },
      "appending the frames spooled when the scanner stopped with Redis unreachable",
    );
  }

  private noteSpoolAppended(n: number): void {
    if (!this.spoolOnDisk) return;
    this.spoolLeft = Math.max(0, this.spoolLeft - n);
    if (this.spoolLeft > 0 || this.spoolCounters) return;
    this.spoolOnDisk = false;
    removeSpool(this.d.spoolFile, this.d.log);
  }
}
