import {
  closeSync,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  rmSync,
  writeSync,
} from "node:fs";
import { dirname } from "node:path";
import type { Redis } from "ioredis";
import type { CanFrame, FrameSource, FrameSrc } from "../pipeline/can/frame.js";
import { frameFlags, toHex } from "../pipeline/can/frame.js";
import type { DecodeTable } from "../pipeline/can/table.js";
import type { Config } from "../pipeline/runtime/config.js";
import type { RedisKeys } from "../pipeline/runtime/keys.js";
import type { Logger } from "../pipeline/runtime/log.js";
import { redactUrl } from "../pipeline/runtime/stack-env.js";
import { loadTrimScript, trimStream } from "../pipeline/runtime/trim.js";
import { decodeFrame } from "./decode.js";

// can-ingest (the can-scanner): frames from a source → one raw-stream entry per
// frame, in order, XADD in pipelined chunks (never MAXLEN on XADD: that would
// drop unacknowledged entries; trimming is pipeline/runtime/trim.lua's job). It
// never touches PostgreSQL. Every entry names its source in `src`.
//
// Frames wait in a bounded in-memory buffer. While Redis is down the buffer
// holds up to CEA_SCANNER_BUFFER frames; every frame beyond that is counted in
// dropped_buffer (exactly; written when Redis is back). While Redis is up and
// the source can wait (simulator, replay), a full buffer pauses the source.
// On stop the buffer is flushed for a bounded time; what Redis did not take by
// then (Redis unreachable) is written to the spool file with the counters not
// yet written, and the next start appends it first. A failure to write the
// spool is the only way frames are lost at stop, and then the count is logged
// and the scanner exits non-zero.
//
// A live bus that ends (interface down or removed) is a failure, not the end
// of the data: the scanner flushes and exits non-zero so that systemd restarts
// it. Live values: every frame is decoded inline and the live hash gets the
// newest value of each sensor at most once per second (one HSET of many fields).

export const canIngestSpec = {
  name: "can-ingest",
  consumes: "can-bus",
  emits: "raw-entries",
  defaults: {
    chunk: 1_000,
    trimEveryMs: 1_000,
    trimEveryAppends: 20_000,
    liveEveryMs: 1_000,
    warnEveryMs: 10_000,
    /** On stop: how long the buffer may take to reach Redis before it is spooled (the service stops within 15 s). */
    stopFlushMs: 8_000,
    /** On stop: the last trim, live values and health, each at most this long. */
    finalStepMs: 1_500,
  },
  failure: {
    unrecoverable: ["a frame the live-value decoder cannot decode (appended anyway; the worker dead-letters it)"],
    transient: [
      "Redis unreachable: frames buffered up to CEA_SCANNER_BUFFER, overflow counted in dropped_buffer",
      "the trim script fails: retried every second, health degraded naming the error",
    ],
    backoff: { baseMs: 100, maxMs: 5_000 },
    classify: () => "transient",
  },
};

/** A live bus (SocketCAN) stopped delivering frames: the scanner exits non-zero and systemd restarts it. */
export class BusEndedError extends Error {
  override name = "BusEndedError";
}

/** Frames were lost when the scanner stopped (Redis unreachable and the spool not writable). */
export class FramesLostError extends Error {
  override name = "FramesLostError";
}

export interface IngestStats {
  /** Frames taken from the source (appended, buffered or dropped). */
  read: number;
  appended: number;
  droppedBuffer: number;
  droppedHardLimit: number;
  buffered: number;
  lastAppendAt: string | null;
  undecodable: number;
  /** Entries of the stream not yet acknowledged by the workers, at the last trim (pipeline/runtime/trim.lua). */
  backlog: number;
  /** The stream's length at the last trim. */
  streamLength: number;
  /** Lines of a replayed log left out because they were not frames (each reported with file:line). */
  skippedLines: number;
}

export interface IngestDeps {
  config: Config;
  log: Logger;
  redis: Redis;
  keys: RedisKeys;
  table: DecodeTable;
  statsKey: string;
  /** Where frames that Redis did not take by the time of a stop are kept until the next start. */
  spoolFile: string;
}

/** The stream a spool belongs to: a spool is only ever appended to the stream it was written for. */
export function spoolTarget(redisUrl: string, stream: string): string {
  return `${redactUrl(redisUrl)} ${stream}`;
}

export interface RunResult {
  /** "end": the source finished (simulator, replay); "stop": stop() was called. */
  reason: "end" | "stop";
  /** Frames written to the spool file at stop (Redis unreachable); appended at the next start. */
  spooled: number;
  /** The trim script's last error when it was still failing at the end. */
  trimError: string | null;
}

interface Queued {
  f: CanFrame;
  src: FrameSrc;
}

/** Counters in the stats hash that are written with the next append. */
interface Unwritten {
  dropped_buffer: number;
  skipped_lines: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const TIMEOUT = Symbol("timeout");
const STOPPED = Symbol("stopped");

/** `p`, or TIMEOUT when `ms` pass first; `p` gets a handler either way, so a late rejection is not unhandled. */
function within<T>(p: Promise<T>, ms: number): Promise<T | typeof TIMEOUT> {
  p.catch(() => undefined);
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<typeof TIMEOUT>((r) => (timer = setTimeout(() => r(TIMEOUT), ms)))]).finally(() =>
    clearTimeout(timer),
  );
}

/** Counters of a spool file are added once per file, even when its frames are appended twice. */
const ADD_ONCE = `
if redis.call('SET', KEYS[2], '1', 'NX', 'EX', 2592000) then
  for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
  return 1
end
return 0`;

export class Ingest {
  readonly stats: IngestStats = {
    read: 0,
    appended: 0,
    droppedBuffer: 0,
    droppedHardLimit: 0,
    buffered: 0,
    lastAppendAt: null,
    undecodable: 0,
    backlog: 0,
    streamLength: 0,
    skippedLines: 0,
  };
  private buf: Queued[] = [];
  private head = 0;
  private unwritten: Unwritten = { dropped_buffer: 0, skipped_lines: 0 };
  /** Counters of a loaded spool file, written once (ADD_ONCE) with its id. */
  private spoolCounters: { id: string; counters: Unwritten } | null = null;
  /** Frames of a loaded spool file not yet appended; the file is removed when this reaches 0. */
  private spoolLeft = 0;
  private spoolOnDisk = false;
  private live = new Map<number, string>();
  private src: FrameSrc = "socketcan";
  private sourceName = "";
  private sourceDone = false;
  private stopping = false;
  private stopDeadline: Promise<typeof TIMEOUT> | null = null;
  private wakeFlusher: (() => void) | null = null;
  private wakeProducer: (() => void) | null = null;
  private sinceTrim = 0;
  private trimError: string | null = null;
  private periodicBusy = false;
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
    this.stats.read += frames.length;
    const room = Math.max(0, cap - this.size);
    const take = Math.min(room, frames.length);
    for (let i = 0; i < take; i++) this.buf.push({ f: frames[i]!, src: this.src });
    if (take < frames.length) {
      const lost = frames.length - take;
      this.stats.droppedBuffer += lost;
      this.unwritten.dropped_buffer += lost;
      this.d.log.error(
        { lost, buffered: this.size },
        "scanner buffer full: frames dropped (counted in dropped_buffer)",
      );
    }
    for (let i = 0; i < take; i++) this.noteLive(frames[i]!);
    this.stats.buffered = this.size;
    this.wakeFlusher?.();
  }

  /** A line of a replayed log that is not a frame: counted and reported with its file:line; the replay goes on. */
  skipLine(err: Error): void {
    this.stats.skippedLines++;
    this.unwritten.skipped_lines++;
    // the first hundred individually, then every thousandth, so a corrupt file cannot flood the journal
    const n = this.stats.skippedLines;
    if (n <= 100 || n % 1_000 === 0)
      this.d.log.warn({ skipped: n, err: err.message }, "replay: line left out (not a candump -l frame)");
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

  /**
   * Append everything buffered, in order. Returns when the source is done and
   * the buffer empty, or on stop when the buffer is empty or the stop deadline
   * passed (the rest is then spooled by run()). Never rejects.
   */
  private async flushLoop(): Promise<void> {
    const { redis, keys, statsKey } = this.d;
    for (let attempt = 0; ; ) {
      if (this.size === 0 && !this.hasUnwritten()) {
        if (this.sourceDone || this.stopping) return;
        await new Promise<void>((r) => {
          this.wakeFlusher = r;
          setTimeout(r, 100);
        });
        continue;
      }
      const end = Math.min(this.buf.length, this.head + this.opts.chunk);
      const n = end - this.head;
      const p = redis.pipeline();
      if (this.spoolCounters) {
        const { id, counters } = this.spoolCounters;
        p.eval(ADD_ONCE, 2, statsKey, `${statsKey}:spool:${id}`, ...Object.entries(counters).flat());
      }
      for (let i = this.head; i < end; i++) {
        const { f, src } = this.buf[i]!;
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
          "src",
          src,
        );
      }
      const counters = { ...this.unwritten };
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
        if ((await this.untilStopDeadline(sleep(delay).then(() => ({ ok: true as const, value: null })))) === TIMEOUT)
          return;
        continue;
      }
      attempt = 0;
      this.spoolCounters = null;
      for (const k of Object.keys(counters) as (keyof Unwritten)[]) this.unwritten[k] -= counters[k];
      this.head = end;
      if (this.head > 65_536 && this.head * 2 > this.buf.length) {
        this.buf = this.buf.slice(this.head);
        this.head = 0;
      }
      this.noteSpoolAppended(n);
      this.stats.appended += n;
      this.stats.buffered = this.size;
      if (n) this.stats.lastAppendAt = new Date().toISOString();
      this.sinceTrim += n;
      this.wakeProducer?.();
      if (this.sinceTrim >= this.opts.trimEveryAppends) await this.trimSafely();
    }
  }

  private hasUnwritten(): boolean {
    return this.spoolCounters !== null || this.unwritten.dropped_buffer > 0 || this.unwritten.skipped_lines > 0;
  }

  /** The outcome of `p`, or TIMEOUT once the stop deadline has passed (never before stop()). */
  private async untilStopDeadline<T>(
    p: Promise<T>,
  ): Promise<{ ok: true; value: T } | { ok: false; err: unknown } | typeof TIMEOUT> {
    const settled = p.then(
      (value) => ({ ok: true as const, value }),
      (err: unknown) => ({ ok: false as const, err }),
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

  /** Waits interrupted by stop() (one entry per wait in progress, removed when it ends). */
  private readonly stopWaiters = new Set<() => void>();

  /** Trim, catching everything: a failing trim is an outage to report, never a reason to lose the buffer. */
  private async trimSafely(): Promise<void> {
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

  /** pipeline/runtime/trim.lua: acknowledged entries to ~keep; hard limit with an exact drop count. */
  async trim(): Promise<void> {
    const { config, redis, keys, statsKey, log } = this.d;
    this.sinceTrim = 0;
    const r = await trimStream(redis, this.lua, {
      stream: keys.raw,
      statsKey,
      group: config.CEA_GROUP,
      keep: config.CEA_STREAM_TRIM_ACKED,
      hard: config.CEA_STREAM_HARD_LIMIT,
    });
    if (r.droppedUnacked > 0) {
      this.stats.droppedHardLimit += r.droppedUnacked;
      log.error(
        { dropped: r.droppedUnacked, limit: config.CEA_STREAM_HARD_LIMIT, total: this.stats.droppedHardLimit },
        "stream passed its hard limit: unread entries dropped (counted in dropped_hard_limit)",
      );
    }
    // warn about the backlog, not XLEN: the stream always keeps ~CEA_STREAM_TRIM_ACKED acknowledged entries
    this.stats.backlog = r.backlog;
    this.stats.streamLength = r.length;
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

  async writeHealth(): Promise<void> {
    const { redis, keys, config } = this.d;
    const problems: string[] = [];
    if (this.trimError) problems.push(`stream trim failing: ${this.trimError}`);
    if (this.unwritten.dropped_buffer > 0)
      problems.push(`${this.unwritten.dropped_buffer} frames dropped (buffer full)`);
    const body = JSON.stringify({
      service: "can-scanner",
      status: problems.length ? "degraded" : "ok",
      problems,
      source: this.sourceName,
      src: this.src,
      pid: process.pid,
      at: new Date().toISOString(),
      ...this.stats,
    });
    await redis.set(keys.health("can-scanner"), body, "EX", config.CEA_HEALTH_TTL_S);
  }

  /** Pump a source to its end (or until stop); flushes, trims and updates live values meanwhile. */
  async run(source: FrameSource): Promise<RunResult> {
    const { log } = this.d;
    this.src = source.src;
    this.sourceName = source.name;
    this.loadSpool();
    // flushLoop handles its own failures; a bug there must still end the run in order, never as an unhandled rejection
    let flushFailure: Error | null = null;
    const flusher = this.flushLoop().catch((err: Error) => {
      flushFailure = err;
      this.stop();
    });
    const periodic = setInterval(() => {
      if (!this.redisUp() || this.periodicBusy) return;
      this.periodicBusy = true;
      Promise.all([this.trimSafely(), this.flushLive(), this.writeHealth()])
        .catch((err: Error) => log.warn({ err: err.message }, "periodic live/health update failed; next round retries"))
        .finally(() => {
          this.periodicBusy = false;
        });
    }, this.opts.trimEveryMs);
    let failure: Error | null = null;
    try {
      for await (const frames of source.frames()) {
        await this.offer(frames, source.pausable);
        if (this.stopping) break;
      }
      if (!this.stopping && source.src === "socketcan")
        failure = new BusEndedError(
          `${source.name}: the CAN interface stopped delivering frames (down or removed); exiting so that the service is restarted`,
        );
    } catch (err) {
      failure = err as Error;
    }
    // the source failed or the bus went away: flush what we have within the stop deadline, then fail
    if (failure) this.stop();
    this.sourceDone = true;
    this.wakeFlusher?.();
    await flusher;
    clearInterval(periodic);
    failure ??= flushFailure;

    const reason = this.stopping && !failure ? "stop" : "end";
    let spooled = 0;
    if (this.size > 0 || this.hasUnwritten()) spooled = this.spool();
    if (this.redisUp()) {
      const step = this.opts.finalStepMs;
      await within(this.trimSafely(), step);
      await within(this.flushLive(), step);
      await within(this.writeHealth(), step);
    }
    if (failure) throw failure;
    return { reason, spooled, trimError: this.trimError };
  }

  /** Stop reading; the buffer gets a bounded time to reach Redis, then it is spooled. */
  stop(): void {
    if (this.stopping) return;
    this.stopping = true;
    this.stopDeadline = new Promise((r) => setTimeout(() => r(TIMEOUT), this.opts.stopFlushMs));
    for (const w of [...this.stopWaiters]) w();
    this.wakeFlusher?.();
    this.wakeProducer?.();
  }

  /** Frames of a previous run's spool file go first; the file stays until they are all appended. */
  private loadSpool(): void {
    const file = this.d.spoolFile;
    if (!existsSync(file)) return;
    const lines = readFileSync(file, "utf8").split("\n").filter(Boolean);
    let head: { id: string; counters: Unwritten; frames: number; target?: string };
    const frames: Queued[] = [];
    try {
      head = JSON.parse(lines[0] ?? "") as typeof head;
      const target = spoolTarget(this.d.config.CEA_REDIS_URL, this.d.keys.raw);
      if (head.target !== target) {
        this.d.log.error(
          { file, spoolFor: head.target, stream: target },
          "scanner spool written for another Redis or stream: left as it is, not appended",
        );
        return;
      }
      for (const l of lines.slice(1)) {
        const { data, src, ...f } = JSON.parse(l) as CanFrame & { data: string; src: FrameSrc };
        frames.push({ f: { ...f, data: Buffer.from(data, "hex") }, src });
      }
      if (frames.length !== head.frames) throw new Error(`${frames.length} frames, the header says ${head.frames}`);
    } catch (err) {
      // never append a spool we cannot read whole; keep it for inspection
      const bad = `${file}.bad-${Date.now()}`;
      renameSync(file, bad);
      this.d.log.error(
        { file: bad, err: (err as Error).message },
        "scanner spool unreadable: left as it is, not appended (its frames are missing from the stream)",
      );
      return;
    }
    // ahead of everything (the buffer is empty at start); concat, not a spread: a spool holds up to CEA_SCANNER_BUFFER frames
    this.buf = frames.concat(this.buf.slice(this.head));
    this.head = 0;
    this.spoolLeft = frames.length;
    this.spoolCounters = { id: head.id, counters: head.counters };
    this.spoolOnDisk = true;
    this.stats.buffered = this.size;
    this.d.log.warn(
      { file, frames: frames.length, ...head.counters },
      "appending the frames spooled when the scanner stopped with Redis unreachable",
    );
  }

  private noteSpoolAppended(n: number): void {
    if (!this.spoolOnDisk) return;
    this.spoolLeft = Math.max(0, this.spoolLeft - n);
    if (this.spoolLeft > 0 || this.spoolCounters) return;
    this.spoolOnDisk = false;
    try {
      rmSync(this.d.spoolFile, { force: true });
    } catch (err) {
      // appended already: a second start would append it again, which writes nothing new downstream
      this.d.log.error(
        { file: this.d.spoolFile, err: (err as Error).message },
        "cannot remove the appended spool file",
      );
    }
  }

  /**
   * Write what Redis did not take (frames and counters) to the spool file, atomically
   * (temporary file, fsync, rename). Returns the number of frames; throws
   * FramesLostError when the file cannot be written.
   */
  private spool(): number {
    const file = this.d.spoolFile;
    const frames = this.buf.slice(this.head);
    const counters: Unwritten = {
      dropped_buffer: this.unwritten.dropped_buffer + (this.spoolCounters?.counters.dropped_buffer ?? 0),
      skipped_lines: this.unwritten.skipped_lines + (this.spoolCounters?.counters.skipped_lines ?? 0),
    };
    const id = `${Date.now()}-${process.pid}`;
    const tmp = `${file}.tmp`;
    try {
      // the folder itself only (systemd's StateDirectory or the checkout's .state): a
      // recursive mkdir can spin forever on special file systems such as /proc
      if (!existsSync(dirname(file))) mkdirSync(dirname(file));
      const fd = openSync(tmp, "w", 0o600);
      try {
        const target = spoolTarget(this.d.config.CEA_REDIS_URL, this.d.keys.raw);
        const at = new Date().toISOString();
        writeSync(fd, `${JSON.stringify({ id, target, counters, frames: frames.length, at })}\n`);
        let text = "";
        for (const { f, src } of frames) {
          text += `${JSON.stringify({ ...f, data: toHex(f.data), src })}\n`;
          if (text.length > 1 << 20) {
            writeSync(fd, text);
            text = "";
          }
        }
        writeSync(fd, text);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, file);
      const dir = openSync(dirname(file), "r");
      try {
        fsyncSync(dir);
      } finally {
        closeSync(dir);
      }
    } catch (err) {
      throw new FramesLostError(
        `${frames.length} frames lost at stop (Redis unreachable, and the spool ${file} could not be written: ${(err as Error).message}); ` +
          `also not counted in Redis: dropped_buffer +${counters.dropped_buffer}, skipped_lines +${counters.skipped_lines}`,
      );
    }
    this.d.log.warn(
      { file, frames: frames.length, ...counters },
      "Redis unreachable at stop: buffered frames kept in the spool file; the next start appends them",
    );
    return frames.length;
  }
}
