import type { Logger } from "../../pipeline/runtime/log.js";
import { redactUrl } from "../../pipeline/runtime/stack-env.js";

// The scanner's counters: one typed object that the stages of its chain write
// (each its own fields), and that health and the Prometheus metrics
// (stages/can-ingest-metrics.ts) read. Counters not yet written to the stats
// hash in Redis wait in `unwritten` and go with the next append.

export interface IngestStats {
  /** Frames taken from the source (appended, buffered or dropped). */
  read: number;
  appended: number;
  droppedBuffer: number;
  droppedHardLimit: number;
  buffered: number;
  lastAppendAt: string | null;
  /** Frames the live-value decoder could not decode (appended anyway; the worker dead-letters them). */
  undecodable: number;
  /** Entries of the stream not yet acknowledged by the workers, at the last trim (pipeline/runtime/trim.lua). */
  backlog: number;
  /** The stream's length at the last trim. */
  streamLength: number;
  /** Lines of a replayed log left out because they were not frames (each reported with file:line). */
  skippedLines: number;
}

/** Counters in the stats hash that are written with the next append (named as in the hash). */
export interface Unwritten {
  dropped_buffer: number;
  skipped_lines: number;
}

export class IngestLedger {
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
  readonly unwritten: Unwritten = { dropped_buffer: 0, skipped_lines: 0 };

  constructor(private readonly log: Logger) {}

  /** A line of a replayed log that is not a frame: counted and reported with its file:line; the replay goes on. */
  skipLine(err: Error): void {
    this.stats.skippedLines++;
    this.unwritten.skipped_lines++;
    // the first hundred individually, then every thousandth, so a corrupt file cannot flood the journal
    const n = this.stats.skippedLines;
    if (n <= 100 || n % 1_000 === 0)
      this.log.warn({ skipped: n, err: err.message }, "replay: line left out (not a candump -l frame)");
  }

  hasUnwritten(): boolean {
    return this.unwritten.dropped_buffer > 0 || this.unwritten.skipped_lines > 0;
  }
}

/** The stream a spool belongs to: a spool is only ever appended to the stream it was written for. */
export function spoolTarget(redisUrl: string, stream: string): string {
  return `${redactUrl(redisUrl)} ${stream}`;
}
