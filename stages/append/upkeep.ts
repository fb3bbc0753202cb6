import type { Redis } from "ioredis";
import type { FrameSrc } from "../../pipeline/can/frame.js";
import type { RedisKeys } from "../../pipeline/runtime/keys.js";
import type { Logger } from "../../pipeline/runtime/log.js";
import { loadTrimScript, trimStream } from "../../pipeline/runtime/trim.js";
import type { IngestLedger } from "./ledger.js";

// The raw stream's upkeep by its appender: the trim (pipeline/runtime/trim.lua:
// acknowledged entries down to ~trimAcked, the hard limit with an exact drop
// count), the backlog warning, and the scanner's health key. A failing trim is
// an outage to report (health degraded, logged once per change), never a
// reason to lose the buffer.

export interface UpkeepDeps {
  redis: Redis;
  keys: RedisKeys;
  statsKey: string;
  /** The workers' consumer group: the stream is kept for it. */
  group: string;
  ledger: IngestLedger;
  log: Logger;
  source: { name: string; src: FrameSrc };
  healthTtlS: number;
  /** Problems of the scanner's components (the command transmitter) and their counters, shown in the health key. */
  extra?: () => { problems: string[]; fields: Record<string, unknown> };
}

export interface UpkeepLimits {
  trimAcked: number;
  hardLimit: number;
  warnLength: number;
  warnEveryMs: number;
}

export class StreamUpkeep {
  /** The trim's last error while it keeps failing, else null. */
  trimError: string | null = null;
  /** Entries appended since the last trim. */
  sinceTrim = 0;
  private readonly lua = loadTrimScript();
  private lastWarn = 0;

  constructor(
    private readonly d: UpkeepDeps,
    private readonly limits: UpkeepLimits,
  ) {}

  /** Trim, catching everything (logged once per change of the error). */
  async trimSafely(): Promise<void> {
    try {
      await this.trim();
      if (this.trimError) this.d.log.info("stream trim works again");
      this.trimError = null;
    } catch (err) {
      const msg = (err as Error).message;
      if (this.trimError !== msg)
        this.d.log.error({ err: msg }, "stream trim failed: the stream is not trimmed until it works again (retried)");
      this.trimError = msg;
    }
  }

  private async trim(): Promise<void> {
    const { redis, keys, statsKey, log, ledger } = this.d;
    const { stats } = ledger;
    const l = this.limits;
    this.sinceTrim = 0;
    const r = await trimStream(redis, this.lua, {
      stream: keys.raw,
      statsKey,
      group: this.d.group,
      keep: l.trimAcked,
      hard: l.hardLimit,
    });
    if (r.droppedUnacked > 0) {
      stats.droppedHardLimit += r.droppedUnacked;
      log.error(
        { dropped: r.droppedUnacked, limit: l.hardLimit, total: stats.droppedHardLimit },
        "stream passed its hard limit: unread entries dropped (counted in dropped_hard_limit)",
      );
    }
    // warn about the backlog, not XLEN: the stream always keeps ~trimAcked acknowledged entries
    stats.backlog = r.backlog;
    stats.streamLength = r.length;
    const now = Date.now();
    if (r.backlog > l.warnLength && now - this.lastWarn >= l.warnEveryMs) {
      this.lastWarn = now;
      log.warn(
        { backlog: r.backlog, length: r.length, warnAt: l.warnLength },
        "raw stream backlog is long: the workers are behind",
      );
    }
  }

  async writeHealth(): Promise<void> {
    const { redis, keys, ledger, source } = this.d;
    const problems: string[] = [];
    if (this.trimError) problems.push(`stream trim failing: ${this.trimError}`);
    if (ledger.unwritten.dropped_buffer > 0)
      problems.push(`${ledger.unwritten.dropped_buffer} frames dropped (buffer full)`);
    const extra = this.d.extra?.();
    if (extra) problems.push(...extra.problems);
    const body = JSON.stringify({
      service: "can-scanner",
      status: problems.length ? "degraded" : "ok",
      problems,
      source: source.name,
      src: source.src,
      pid: process.pid,
      at: new Date().toISOString(),
      ...ledger.stats,
      ...extra?.fields,
    });
    await redis.set(keys.health("can-scanner"), body, "EX", this.d.healthTtlS);
  }
}
