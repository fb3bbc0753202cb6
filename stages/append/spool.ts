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
import type { CanFrame, FrameSrc } from "../../pipeline/can/frame.js";
import { toHex } from "../../pipeline/can/frame.js";
import type { Logger } from "../../pipeline/runtime/log.js";
import type { CanEntry } from "./entry.js";
import type { Unwritten } from "./ledger.js";

// The scanner's spool file: what Redis did not take by the time of a stop
// (frames and counters), kept until the next start appends it. One JSON header
// line {id, target, counters, frames, at}, then one JSON line per frame. The
// file is written atomically (temporary file, fsync, rename, fsync of the
// folder) and is appended only whole and only to the stream it names.

/** Frames were lost when the scanner stopped (Redis unreachable and the spool not writable). */
export class FramesLostError extends Error {
  override name = "FramesLostError";
}

export interface Spooled {
  /** Identifies the file: its counters are added once even when its frames are appended twice. */
  id: string;
  counters: Unwritten;
  entries: CanEntry[];
}

interface Header {
  id: string;
  target?: string;
  counters: Unwritten;
  frames: number;
}

/** The spool at `file` when there is one for `target`; a foreign one is left alone, an unreadable one renamed. */
export function readSpool(file: string, target: string, log: Logger): Spooled | null {
  if (!existsSync(file)) return null;
  const lines = readFileSync(file, "utf8").split("\n").filter(Boolean);
  const entries: CanEntry[] = [];
  let head: Header;
  try {
    head = JSON.parse(lines[0] ?? "") as Header;
    if (head.target !== target) {
      log.error(
        { file, spoolFor: head.target, stream: target },
        "scanner spool written for another Redis or stream: left as it is, not appended",
      );
      return null;
    }
    for (const l of lines.slice(1)) {
      const { data, src, ...f } = JSON.parse(l) as CanFrame & { data: string; src: FrameSrc };
      entries.push({ f: { ...f, data: Buffer.from(data, "hex") }, src });
    }
    if (entries.length !== head.frames) throw new Error(`${entries.length} frames, the header says ${head.frames}`);
  } catch (err) {
    // never append a spool we cannot read whole; keep it for inspection
    const bad = `${file}.bad-${Date.now()}`;
    renameSync(file, bad);
    log.error(
      { file: bad, err: (err as Error).message },
      "scanner spool unreadable: left as it is, not appended (its frames are missing from the stream)",
    );
    return null;
  }
  return { id: head.id, counters: head.counters, entries };
}

/** Write `entries` and `counters` to `file` atomically; FramesLostError when that fails. */
export function writeSpool(file: string, target: string, entries: readonly CanEntry[], counters: Unwritten): void {
  const id = `${Date.now()}-${process.pid}`;
  const tmp = `${file}.tmp`;
  try {
    // the folder itself only (systemd's StateDirectory or the checkout's .state): a
    // recursive mkdir can spin forever on special file systems such as /proc
    if (!existsSync(dirname(file))) mkdirSync(dirname(file));
    const fd = openSync(tmp, "w", 0o600);
    try {
      const at = new Date().toISOString();
      writeSync(fd, `${JSON.stringify({ id, target, counters, frames: entries.length, at })}\n`);
      let text = "";
      for (const { f, src } of entries) {
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
      `${entries.length} frames lost at stop (Redis unreachable, and the spool ${file} could not be written: ${(err as Error).message}); ` +
        `also not counted in Redis: dropped_buffer +${counters.dropped_buffer}, skipped_lines +${counters.skipped_lines}`,
    );
  }
}

/** Remove an appended spool; a failure is logged (a second start appends it again, which writes nothing new downstream). */
export function removeSpool(file: string, log: Logger): void {
  try {
    rmSync(file, { force: true });
  } catch (err) {
    log.error({ file, err: (err as Error).message }, "cannot remove the appended spool file");
  }
}
