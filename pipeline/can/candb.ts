import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { TextDecoder } from "node:util";
import { ConfigError } from "../runtime/errors.js";
import { parseDbc } from "./dbc.js";
import { parseKcd } from "./kcd.js";
import {
  type CanDb,
  formatId,
  layoutProblems,
  layoutWarnings,
  type MessageDef,
  messageDefSchema,
  messageKey,
  type Refusal,
} from "./model.js";

// Loading a CAN database: the format is chosen by the file's extension (.kcd
// or .dbc). Each format's parser turns the file into candidate messages; the
// checks that decide whether a message can be decoded exactly are the same
// for both and are made here. A message that cannot be is refused on its own,
// with file, message, signal and reason; the rest of the file loads. Only a
// file that cannot be read or parsed at all stops start-up (ConfigError).

/** A message as a parser found it, before validation. */
export interface Candidate {
  name: string;
  id: number | undefined;
  extended: boolean | undefined;
  /** Where it is: "file:line" (and the bus for KCD), for messages. */
  where: string;
  /** Input to messageDefSchema. */
  def: unknown;
  /** Problems the parser already found (unparsable numbers, unknown value types…). */
  problems: { signal: string | undefined; reason: string }[];
}

/** Read a text file as UTF-8, or as Windows-1252 when it is not valid UTF-8 (as DBC tools write them). */
export function readText(file: string): string {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    throw new ConfigError(`${file}: cannot read CAN database: ${(err as Error).message}`);
  }
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return new TextDecoder("windows-1252").decode(bytes);
  }
}

export function loadCanDb(file: string): CanDb {
  const ext = extname(file).toLowerCase();
  if (ext !== ".kcd" && ext !== ".dbc")
    throw new ConfigError(`${file}: CAN database must be a .kcd or .dbc file (chosen by the extension)`);
  const text = readText(file);
  const format = ext === ".kcd" ? "kcd" : "dbc";
  const candidates = format === "kcd" ? parseKcd(text, file) : parseDbc(text, file);
  return validate(file, format, candidates);
}

function refusal(c: Candidate, signal: string | undefined, reason: string): Refusal {
  const id = c.id !== undefined && c.extended !== undefined ? ` ${formatId(c.id, c.extended)}` : "";
  return {
    message: c.name,
    id: c.id,
    extended: c.extended,
    signal,
    reason,
    text: `${c.where}: message "${c.name}"${id}${signal === undefined ? "" : `: signal "${signal}"`}: ${reason}`,
  };
}

export function validate(file: string, format: "kcd" | "dbc", candidates: Candidate[]): CanDb {
  const messages: MessageDef[] = [];
  const refused: Refusal[] = [];
  const warnings: string[] = [];
  const byKey = new Map<number, Candidate>();
  const byName = new Map<string, Candidate>();
  for (const c of candidates) {
    if (c.problems.length) {
      for (const p of c.problems) refused.push(refusal(c, p.signal, p.reason));
      continue;
    }
    const parsed = messageDefSchema.safeParse(c.def);
    if (!parsed.success) {
      const sigs = (c.def as { signals?: { name?: unknown }[] }).signals;
      for (const i of parsed.error.issues) {
        const [first, idx, ...rest] = i.path;
        if (first === "signals" && typeof idx === "number") {
          const name = sigs?.[idx]?.name;
          refused.push(
            refusal(c, typeof name === "string" ? name : `#${idx}`, `${rest.join(".") || "signal"}: ${i.message}`),
          );
        } else refused.push(refusal(c, undefined, `${i.path.join(".") || "message"}: ${i.message}`));
      }
      continue;
    }
    const m = parsed.data;
    const layout = layoutProblems(m);
    if (layout.length) {
      for (const p of layout) refused.push(refusal(c, p.signal, p.reason));
      continue;
    }
    const key = messageKey(m.id, m.extended);
    const sameKey = byKey.get(key);
    if (sameKey) {
      refused.push(
        refusal(
          c,
          undefined,
          `its id is already used by message "${sameKey.name}" (${sameKey.where}); a frame cannot tell them apart`,
        ),
      );
      continue;
    }
    const sameName = byName.get(m.name);
    // decodes all the same; only the site file cannot name its signals (ambiguous there)
    if (sameName)
      warnings.push(refusal(c, undefined, `the name is also used by the message at ${sameName.where}`).text);
    for (const w of layoutWarnings(m)) warnings.push(refusal(c, w.signal, w.reason).text);
    byKey.set(key, c);
    byName.set(m.name, c);
    messages.push(m);
  }
  return { file, format, messages, refused, warnings };
}
