import type { Redis } from "ioredis";
import type { CanFrame, FrameSource } from "../pipeline/can/frame.js";
import { frameFlags, toHex } from "../pipeline/can/frame.js";
import type { DecodeTable } from "../pipeline/can/table.js";
import type { Config } from "../pipeline/runtime/config.js";
import type { RedisKeys } from "../pipeline/runtime/keys.js";
import type { Logger } from "../pipeline/runtime/log.js";
import type { FailureSpec } from "../pipeline/runtime/stage.js";
import { loadTrimScript, trimStream } from "../pipeline/runtime/trim.js";
import { decodeFrame } from "./decode.js";

// can-ingest (the can-scanner): frames from a source → one raw-stream entry per
// frame, in order, XADD in pipelined chunks (never MAXLEN on XADD: that would
// drop unacknowledged entries; trimming is pipeline/runtime/trim.lua's job). It never
// touches PostgreSQL. Frames wait in a bounded in-memory buffer; while Redis
// is down the buffer holds up to CEA_SCANNER_BUFFER frames and every frame
// beyond that is counted in dropped_buffer (exactly; the count is written when
// Redis is back). While Redis is up and the source can wait (simulator,
// replay), a full buffer pauses the source instead. Live values: every frame
// is decoded inline and the live hash gets the newest value of each sensor
// at most once per second (one HSET of many fields).

export const canIngestSpec = {
  name: "can-ingest",
  consumes: "can-bus",
  emits: "raw-entries",
  defaults: { chunk: 1_000, trimEveryMs: 1_000, trimEveryAppends: 20_000, liveEveryMs: 1_000, warnEveryMs: 10_000 },
  failure: {
    unrecoverable: ["a frame the live-value decoder cannot decode (appended anyway; the worker dead-letters it)"],
    transient: ["Redis unreachable: frames buffered up to CEA_SCANNER_BUFFER, overflow counted in dropped_buffer"],
    backoff: { baseMs: 100, maxMs: 5_000 },
    classify: () => "transient",
  } satisfies FailureSpec,
};

export interface IngestStats {
  appended: number;
  droppedBuffer: number;
  droppedHardLimit: number;
  buffered: number;
  lastAppendAt: string | null;
  undecodable: number;
  /** Entries of the stream not yet acknowledged by the workers, at the last trim (pipeline/runtime/trim.lua). */
  backlog: number;
}

export interface IngestDeps {
  config: Config;
  log: Logger;
  redis: Redis;
  keys: RedisKeys;
  table: DecodeTable;
  statsKey: string;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export class Ingest {
  readonly stats: IngestStats = {
    appended: 0,
    droppedBuffer: 0,
    droppedHardLimit: 0,
    buffered: 0,
    lastAppendAt: null,
    undecodable: 0,
    backlog: 0,
  };
  private buf: CanFrame[] = [];
  private head = 0;
  private droppedUnpersisted = 0;
  private live = new Map<number, string>();
  private sourceDone = false;
  private stopping = false;
  private wakeFlusher: (() => void) | null = null;
  private wakeProducer: (() => void) | null = null;
  private sinceTrim = 0;
  private readonly lua = loadTrimScript();
  private readonly opts = canIngestSpec.defaults;
  private lastWarn = 0;

  constructor(private readonly d: IngestDeps) {}

  private get size(): number {
    return this.buf.length - this.head;
  }

  private redisUp(): boolean {
    return this.d.redis.status === "ready";
  }

  /** Take frames from the source. Waits for room while Redis is up and the source can wait. */
  async offer(frames: CanFrame[], pausable: boolean): Promise<void> {
    const cap = this.d.config.CEA_SCANNER_BUFFER;
    while (pausable && this.size + frames.length > cap && this.redisUp() && !this.stopping) {
      await new Promise<void>((r) => {
        this.wakeProducer = r;
        setTimeout(r, 200);
      });
    }
    const room = Math.max(0, cap - this.size);
    const take = Math.min(room, frames.length);
    for (let i = 0; i < take; i++) this.buf.push(frames[i]!);
    if (take < frames.length) {
      const lost = frames.length - take;
      this.stats.droppedBuffer += lost;
      this.droppedUnpersisted += lost;
      this.d.log.error(
        { lost, buffered: this.size },
        "scanner buffer full: frames dropped (counted in dropped_buffer)",
      );
    }
    for (let i = 0; i < take; i++) this.noteLive(frames[i]!);
    this.stats.buffered = this.size;
    this.wakeFlusher?.();
  }

  private noteLive(f: CanFrame): void {
    try {
      const { values } = decodeFrame(this.d.table, f.id, f.data, f.ext ?? false);
      for (const v of values)
        this.live.set(
          v.signal.sensorId,
          JSON.stringify({
            value: v.value,
            time: f.ts,
            name: v.signal.sensorName,
            status: v.outOfRange ? "out_of_range" : null,
          }),
        );
    } catch {
      // not decodable: appended anyway, the worker dead-letters it with the reason
      this.stats.undecodable++;
    }
  }

  /** Append everything buffered, in order; returns when the source is done and the buffer empty, or on stop. */
  async flushLoop(): Promise<void> {
    const { redis, keys, statsKey } = this.d;
    for (let attempt = 0; ; ) {
      if (this.size === 0) {
        if (this.sourceDone || this.stopping) return;
        await new Promise<void>((r) => {
          this.wakeFlusher = r;
          setTimeout(r, 100);
        });
        continue;
      }
      const end = Math.min(this.buf.length, this.head + this.opts.chunk);
      const p = redis.pipeline();
      for (let i = this.head; i < end; i++) {
        const f = this.buf[i]!;
        p.xadd(
          keys.raw,
          "*",
          "ts",
          f.ts,
          "id",
          String(f.id),
          "data",
          toHex(f.data),
          "iface",
          f.iface,
          ...frameFlags(f),
        );
      }
      const n = end - this.head;
      const dropped = this.droppedUnpersisted;
      p.hincrby(statsKey, "appended", n);
      if (dropped) p.hincrby(statsKey, "dropped_buffer", dropped);
      try {
        const res = await p.exec();
        const failed = res?.find(([err]) => err);
        if (!res || failed) throw failed?.[0] ?? new Error("pipeline aborted");
        attempt = 0;
      } catch (err) {
        // connection lost mid-chunk: the chunk is sent again (a duplicate entry writes nothing new downstream)
        const delay = Math.min(5_000, 100 * 2 ** Math.min(attempt++, 6));
        this.d.log.warn({ err: (err as Error).message, delay, buffered: this.size }, "append failed; retrying");
        await sleep(delay);
        continue;
      }
      this.droppedUnpersisted -= dropped;
      this.head = end;
      if (this.head > 65_536 && this.head * 2 > this.buf.length) {
        this.buf = this.buf.slice(this.head);
        this.head = 0;
      }
      this.stats.appended += n;
      this.stats.buffered = this.size;
      this.stats.lastAppendAt = new Date().toISOString();
      this.sinceTrim += n;
      this.wakeProducer?.();
      if (this.sinceTrim >= this.opts.trimEveryAppends) await this.trim();
    }
  }

  /** pipeline/runtime/trim.lua: acknowledged entries to ~keep; hard limit with an exact drop count. */
  async trim(): Promise<void> {
    const { config, redis, keys, statsKey, log } = this.d;
    this.sinceTrim = 0;
    const r = await trimStream(
      redis,
      this.lua,
      keys.raw,
      statsKey,
      config.CEA_STREAM_TRIM_ACKED,
      config.CEA_STREAM_HARD_LIMIT,
    );
    if (r.droppedUnacked > 0) {
      this.stats.droppedHardLimit += r.droppedUnacked;
      log.error(
        { dropped: r.droppedUnacked, limit: config.CEA_STREAM_HARD_LIMIT, total: this.stats.droppedHardLimit },
        "stream passed its hard limit: unacknowledged entries dropped (counted in dropped_hard_limit)",
      );
    }
    // warn about the backlog, not XLEN: the stream always keeps ~CEA_STREAM_TRIM_ACKED acknowledged entries
    this.stats.backlog = r.backlog;
    const now = Date.now();
    if (r.backlog > config.CEA_STREAM_WARN_LENGTH && now - this.lastWarn >= this.opts.warnEveryMs) {
      this.lastWarn = now;
      log.warn(
        { backlog: r.backlog, length: r.length, warnAt: config.CEA_STREAM_WARN_LENGTH },
        "raw stream backlog is long: the workers are behind",
      );
    }
  }

  /** Write the newest value of every sensor that changed since the last call (one HSET). */
  async flushLive(): Promise<void> {
    if (this.live.size === 0) return;
    const fields: string[] = [];
    for (const [id, v] of this.live) fields.push(String(id), v);
    this.live.clear();
    await this.d.redis.hset(this.d.keys.live, ...fields);
  }

  async writeHealth(source: string): Promise<void> {
    const { redis, keys, config } = this.d;
    const body = JSON.stringify({
      service: "can-scanner",
      status: this.droppedUnpersisted > 0 ? "degraded" : "ok",
      source,
      pid: process.pid,
      at: new Date().toISOString(),
      ...this.stats,
    });
    await redis.set(keys.health("can-scanner"), body, "EX", config.CEA_HEALTH_TTL_S);
  }

  /** Pump a source to the end (or until stop); flushes, trims and updates live values meanwhile. */
  async run(source: FrameSource): Promise<void> {
    const { log } = this.d;
    const flusher = this.flushLoop();
    const periodic = setInterval(() => {
      if (!this.redisUp()) return;
      Promise.all([this.trim(), this.flushLive(), this.writeHealth(source.name)]).catch((err: Error) =>
        log.warn({ err: err.message }, "periodic trim/live/health failed; next round retries"),
      );
    }, this.opts.trimEveryMs);
    try {
      for await (const frames of source.frames()) {
        await this.offer(frames, source.pausable);
        if (this.stopping) break;
      }
    } finally {
      this.sourceDone = true;
      this.wakeFlusher?.();
      await flusher;
      clearInterval(periodic);
    }
    if (this.size > 0) throw new Error(`${this.size} frames not appended at stop`);
    await this.trim();
    await this.flushLive();
    await this.writeHealth(source.name);
  }

  stop(): void {
    this.stopping = true;
    this.wakeFlusher?.();
    this.wakeProducer?.();
  }
}
