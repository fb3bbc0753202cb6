import { ConfigError } from "../runtime/errors.js";
import type { Candidate } from "./candb.js";
import type { Label } from "./model.js";

// DBC (Vector CAN database, text) → candidate messages. Our own reader: the
// npm DBC parsers measured against the test files refuse the standard NS_
// block and CRLF files, misread 64-byte messages and drop SG_MUL_VAL_ (see
// db/REQUIREMENTS.md, "CAN database files"). What it reads:
//   BO_ id name: length sender           id bit 31 set = 29-bit id
//   SG_ name [M|mN|mNM] : start|length@order sign (factor,offset) [min|max] "unit" receivers
//   SIG_VALTYPE_ id signal : 1|2;        IEEE single / double
//   SG_MUL_VAL_ id signal multiplexer a-b, c-d;   extended multiplexing
//   VAL_ id signal n "label" …;          value table
//   BA_DEF_ / BA_DEF_DEF_ / BA_ for GenMsgCycleTime and VFrameFormat (CAN FD)
// and skips every other statement. [0|0] is "no range", as DBC tools write it.
// Errors inside a message's statements refuse that message; a statement that
// names no message it belongs to and cannot be read stops the load.

interface Token {
  k: "id" | "num" | "str" | "p";
  v: string;
  line: number;
}

const ID = /[A-Za-z_][A-Za-z0-9_]*/y;
const NUM = /[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?/y;

function tokenize(text: string, file: string): Token[] {
  const out: Token[] = [];
  let line = 1;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    if (c === "\n") {
      line++;
      i++;
      continue;
    }
    if (c === " " || c === "\t" || c === "\r" || c === "\f" || c === "\v" || c === "\ufeff") {
      i++;
      continue;
    }
    if (c === "/" && text[i + 1] === "/") {
      // a line comment (some tools write them; Vector's do not)
      while (i < n && text[i] !== "\n") i++;
      continue;
    }
    if (c === '"') {
      const start = line;
      let s = "";
      i++;
      for (;;) {
        if (i >= n) throw new ConfigError(`${file}:${start}: a string is not closed`);
        const d = text[i]!;
        if (d === "\\" && i + 1 < n) {
          s += text[i + 1];
          i += 2;
          continue;
        }
        if (d === '"') break;
        if (d === "\n") line++;
        s += d;
        i++;
      }
      i++;
      out.push({ k: "str", v: s, line: start });
      continue;
    }
    const prev = i > 0 ? text[i - 1]! : " ";
    const signOk = !/[A-Za-z0-9_.)\]]/.test(prev);
    if ((c >= "0" && c <= "9") || c === "." || ((c === "-" || c === "+") && signOk)) {
      NUM.lastIndex = i;
      const m = NUM.exec(text);
      if (m) {
        out.push({ k: "num", v: m[0], line });
        i += m[0].length;
        continue;
      }
    }
    ID.lastIndex = i;
    const m = ID.exec(text);
    if (m) {
      out.push({ k: "id", v: m[0], line });
      i += m[0].length;
      continue;
    }
    out.push({ k: "p", v: c, line });
    i++;
  }
  return out;
}

/** Statements a DBC file may hold; each one starts where the previous ends. */
const KEYWORDS = new Set([
  "VERSION",
  "NS_",
  "BS_",
  "BU_",
  "BO_",
  "SG_",
  "CM_",
  "BA_DEF_",
  "BA_DEF_DEF_",
  "BA_",
  "VAL_",
  "VAL_TABLE_",
  "SIG_VALTYPE_",
  "SG_MUL_VAL_",
  "BO_TX_BU_",
  "EV_",
  "ENVVAR_DATA_",
  "SGTYPE_",
  "SGTYPE_VAL_",
  "BA_DEF_SGTYPE_",
  "BA_SGTYPE_",
  "SIG_TYPE_REF_",
  "SIG_GROUP_",
  "SIGTYPE_VALTYPE_",
  "BA_DEF_REL_",
  "BA_REL_",
  "BA_DEF_DEF_REL_",
  "BU_SG_REL_",
  "BU_EV_REL_",
  "BU_BO_REL_",
  "CAT_DEF_",
  "CAT_",
  "FILTER",
  "EV_DATA_",
]);

/** Message of signals that belong to no frame (Vector's container for unused signals). */
const INDEPENDENT_SIGNALS = 0xc0000000;

class Syntax extends Error {}

interface RawSignal {
  name: string;
  line: number;
  mux: string | undefined;
  startBit: number;
  length: number;
  byteOrder: "little" | "big";
  signed: boolean;
  factor: number;
  offset: number;
  min: number;
  max: number;
  unit: string;
}

interface RawMessage {
  rawId: number;
  name: string;
  line: number;
  length: number;
  signals: RawSignal[];
  problems: { signal: string | undefined; reason: string }[];
}

export function parseDbc(text: string, file: string): Candidate[] {
  const t = tokenize(text, file);
  let p = 0;
  const peek = () => t[p];
  const next = (): Token => {
    const tok = t[p++];
    if (!tok) throw new Syntax("the file ends in the middle of a statement");
    return tok;
  };
  const expect = (v: string) => {
    const tok = next();
    if (tok.v !== v) throw new Syntax(`expected "${v}", found "${tok.v}"`);
  };
  const number = (what: string): number => {
    const tok = next();
    const x = Number(tok.v);
    if (tok.k !== "num" || !Number.isFinite(x)) throw new Syntax(`${what}: expected a number, found "${tok.v}"`);
    return x;
  };
  /** A range bound; one beyond a double (1E+481, as some J1939 files write) is no bound: ±Infinity. */
  const bound = (what: string): number => {
    const tok = next();
    const x = Number(tok.v);
    if (tok.k !== "num" || Number.isNaN(x)) throw new Syntax(`${what}: expected a number, found "${tok.v}"`);
    return x;
  };
  const ident = (what: string): string => {
    const tok = next();
    if (tok.k !== "id") throw new Syntax(`${what}: expected a name, found "${tok.v}"`);
    return tok.v;
  };
  const skipTo = (pred: (tok: Token) => boolean) => {
    while (p < t.length && !pred(t[p]!)) p++;
  };
  const atKeyword = (tok: Token) => tok.k === "id" && KEYWORDS.has(tok.v);
  const skipStatement = () => {
    skipTo((tok) => tok.v === ";" && tok.k === "p");
    p++;
  };

  const messages: RawMessage[] = [];
  const byRawId = new Map<number, RawMessage>();
  /** Problems of statements about a message id that come before or after it. */
  const laterProblems: { rawId: number; signal: string | undefined; reason: string }[] = [];
  const valTypes = new Map<string, { line: number; type: number }>();
  const muxVals = new Map<string, { line: number; selector: string; values: number[] }[]>();
  const labels = new Map<string, Label[]>();
  const attrDefs = new Map<string, { enum: string[] | null }>();
  const attrDefaults = new Map<string, string>();
  const msgAttrs = new Map<number, Map<string, string>>();
  let current: RawMessage | null = null;

  while (p < t.length) {
    const kw = next();
    const line = kw.line;
    if (kw.k !== "id" || !KEYWORDS.has(kw.v)) throw new ConfigError(`${file}:${line}: not a DBC statement: "${kw.v}"`);
    if (kw.v !== "SG_") current = null;
    const owner = current;
    try {
      switch (kw.v) {
        case "VERSION":
          next();
          break;
        case "NS_":
          expect(":");
          // the list of symbols ends at the next statement that has a colon after it (BS_:, BU_:)
          while (p < t.length && !(t[p + 1]?.v === ":" && t[p + 1]?.k === "p" && atKeyword(t[p]!))) p++;
          break;
        case "BS_":
          expect(":");
          skipTo((tok) => tok.line !== line);
          break;
        case "BU_":
          expect(":");
          skipTo(atKeyword);
          break;
        case "BO_": {
          const rawId = number("message id");
          const name = ident("message name");
          expect(":");
          const length = number("message length");
          const msg: RawMessage = { rawId, name, line, length, signals: [], problems: [] };
          skipTo((tok) => atKeyword(tok));
          if (rawId === INDEPENDENT_SIGNALS) {
            current = { ...msg, signals: [] }; // its signals are read and dropped
            break;
          }
          messages.push(msg);
          if (!byRawId.has(rawId)) byRawId.set(rawId, msg);
          current = msg;
          break;
        }
        case "SG_": {
          if (!current) throw new Syntax("SG_ outside a message (no BO_ before it)");
          const msg = current;
          const name = ident("signal name");
          try {
            let mux: string | undefined;
            if (peek()?.k === "id") mux = next().v;
            if (mux !== undefined && !/^(M|m\d+M?)$/.test(mux))
              throw new Syntax(`"${mux}" is not a multiplexer mark (M, mN or mNM)`);
            expect(":");
            const startBit = number("start bit");
            expect("|");
            const length = number("length");
            expect("@");
            const order = next();
            // "1+" / "0-" arrive as one number token when written together ("@1-" splits as 1, -)
            let orderDigit = order.v;
            let sign: string;
            if (/^[01][-+]$/.test(orderDigit)) {
              sign = orderDigit[1]!;
              orderDigit = orderDigit[0]!;
            } else sign = next().v;
            if (orderDigit !== "0" && orderDigit !== "1") throw new Syntax(`byte order "${orderDigit}" is not 0 or 1`);
            if (sign !== "+" && sign !== "-") throw new Syntax(`sign "${sign}" is not + or -`);
            expect("(");
            const factor = number("factor");
            expect(",");
            const offset = number("offset");
            expect(")");
            expect("[");
            const min = bound("minimum");
            expect("|");
            const max = bound("maximum");
            expect("]");
            const unitTok = next();
            if (unitTok.k !== "str") throw new Syntax(`unit: expected a string, found "${unitTok.v}"`);
            skipTo(atKeyword);
            msg.signals.push({
              name,
              line,
              mux,
              startBit,
              length,
              byteOrder: orderDigit === "1" ? "little" : "big",
              signed: sign === "-",
              factor,
              offset,
              min,
              max,
              unit: unitTok.v,
            });
          } catch (err) {
            if (!(err instanceof Syntax)) throw err;
            msg.problems.push({ signal: name, reason: `line ${line}: ${err.message}` });
            skipTo(atKeyword);
          }
          break;
        }
        case "BA_DEF_": {
          if (peek()?.k === "id" && ["BU_", "BO_", "SG_", "EV_"].includes(peek()!.v)) next();
          const name = next().v;
          const type = next().v;
          const values: string[] = [];
          while (peek() && peek()!.v !== ";") values.push(next().v);
          next();
          attrDefs.set(name, { enum: type === "ENUM" ? values.filter((v) => v !== ",") : null });
          break;
        }
        case "BA_DEF_DEF_": {
          const name = next().v;
          const value = next().v;
          attrDefaults.set(name, value);
          skipStatement();
          break;
        }
        case "BA_": {
          const name = next().v;
          if (peek()?.v === "BO_") {
            next();
            const rawId = number("message id");
            const value = next().v;
            const attrs = msgAttrs.get(rawId) ?? new Map<string, string>();
            attrs.set(name, value);
            msgAttrs.set(rawId, attrs);
          }
          skipStatement();
          break;
        }
        case "VAL_": {
          if (peek()?.k !== "num") {
            skipStatement(); // a value table of an environment variable
            break;
          }
          const rawId = number("message id");
          const sig = ident("signal name");
          const list: Label[] = [];
          try {
            while (peek() && peek()!.v !== ";") {
              const v = number(`value table of ${sig}`);
              const s = next();
              if (s.k !== "str") throw new Syntax(`value table of ${sig}: expected a string after ${v}`);
              if (!Number.isInteger(v)) throw new Syntax(`value table of ${sig}: ${v} is not an integer`);
              list.push({ from: v, to: v, name: s.v });
            }
            next();
            labels.set(`${rawId}\0${sig}`, list);
          } catch (err) {
            if (!(err instanceof Syntax)) throw err;
            laterProblems.push({ rawId, signal: sig, reason: `line ${line}: ${err.message}` });
            skipStatement();
          }
          break;
        }
        case "SIG_VALTYPE_": {
          const rawId = number("message id");
          const sig = ident("signal name");
          if (peek()?.v === ":") next();
          const type = number("value type");
          valTypes.set(`${rawId}\0${sig}`, { line, type });
          skipStatement();
          break;
        }
        case "SG_MUL_VAL_": {
          const rawId = number("message id");
          const sig = ident("signal name");
          const selector = ident("multiplexer name");
          const values: number[] = [];
          try {
            while (peek() && peek()!.v !== ";") {
              if (peek()!.v === ",") {
                next();
                continue;
              }
              const a = number("multiplexer range");
              // "3-5" may arrive as 3 and -5 when written without spaces after a comma
              let b: number;
              if (peek()?.v === "-") {
                next();
                b = number("multiplexer range");
              } else {
                const tok = next();
                if (tok.k !== "num" || !tok.v.startsWith("-")) throw new Syntax(`expected a range a-b after ${a}`);
                b = -Number(tok.v);
              }
              if (!Number.isInteger(a) || !Number.isInteger(b) || a < 0 || b < a)
                throw new Syntax(`multiplexer range ${a}-${b} is not a range of whole numbers`);
              if (b - a + values.length > 4096) throw new Syntax(`multiplexer ranges of ${sig} hold over 4096 values`);
              for (let v = a; v <= b; v++) values.push(v);
            }
            next();
            const list = muxVals.get(`${rawId}\0${sig}`) ?? [];
            list.push({ line, selector, values });
            muxVals.set(`${rawId}\0${sig}`, list);
          } catch (err) {
            if (!(err instanceof Syntax)) throw err;
            laterProblems.push({ rawId, signal: sig, reason: `line ${line}: ${err.message}` });
            skipStatement();
          }
          break;
        }
        default:
          skipStatement();
      }
    } catch (err) {
      if (err instanceof Syntax) {
        // a signal line that cannot be read refuses its message; any other statement the file
        if (owner && kw.v === "SG_") owner.problems.push({ signal: undefined, reason: `line ${line}: ${err.message}` });
        else throw new ConfigError(`${file}:${line}: ${kw.v}: ${err.message}`);
        skipTo(atKeyword);
      } else throw err;
    }
  }

  const attr = (rawId: number, name: string): string | undefined =>
    msgAttrs.get(rawId)?.get(name) ?? attrDefaults.get(name);
  const enumName = (name: string, value: string | undefined): string | undefined => {
    if (value === undefined) return undefined;
    const list = attrDefs.get(name)?.enum;
    // BA_ gives the enum's index; BA_DEF_DEF_ its name
    return list && /^\d+$/.test(value) ? list[Number(value)] : value;
  };

  return messages.map((m): Candidate => {
    const extended = m.rawId >= 0x80000000;
    const id = extended ? m.rawId - 0x80000000 : m.rawId;
    const c: Candidate = {
      name: m.name,
      id: Number.isInteger(id) && id >= 0 && id <= 0x7fffffff ? id : undefined,
      extended,
      where: `${file}:${m.line}`,
      def: undefined,
      problems: [...m.problems],
    };
    for (const lp of laterProblems) if (lp.rawId === m.rawId) c.problems.push({ signal: lp.signal, reason: lp.reason });
    if (c.id === undefined) c.problems.push({ signal: undefined, reason: `id ${m.rawId} is not a CAN id` });
    const plainSelectors = m.signals.filter((s) => s.mux === "M");
    const signals = m.signals.map((s) => {
      const key = `${m.rawId}\0${s.name}`;
      const vt = valTypes.get(key);
      let valueType: string = s.signed ? "signed" : "unsigned";
      if (vt?.type === 1) valueType = "float32";
      else if (vt?.type === 2) valueType = "float64";
      else if (vt && vt.type !== 0)
        c.problems.push({
          signal: s.name,
          reason: `line ${vt.line}: SIG_VALTYPE_ ${vt.type} is not 0, 1 (single) or 2 (double)`,
        });
      let muxedBy: { selector: string; values: number[] } | undefined;
      const ext = muxVals.get(key);
      if (ext) {
        if (new Set(ext.map((e) => e.selector)).size > 1)
          c.problems.push({ signal: s.name, reason: "SG_MUL_VAL_ names more than one multiplexer for it" });
        muxedBy = { selector: ext[0]!.selector, values: [...new Set(ext.flatMap((e) => e.values))] };
      } else if (s.mux && s.mux !== "M") {
        if (plainSelectors.length !== 1)
          c.problems.push({
            signal: s.name,
            reason: `"${s.mux}" needs exactly one M multiplexer in the message (found ${plainSelectors.length}) or an SG_MUL_VAL_ line`,
          });
        else muxedBy = { selector: plainSelectors[0]!.name, values: [Number(/^m(\d+)/.exec(s.mux)![1])] };
      }
      const noRange = s.min === 0 && s.max === 0;
      const min = Number.isFinite(s.min) ? s.min : undefined;
      const max = Number.isFinite(s.max) ? s.max : undefined;
      const l = labels.get(key);
      return {
        name: s.name,
        startBit: s.startBit,
        length: s.length,
        byteOrder: s.byteOrder,
        valueType,
        factor: s.factor,
        offset: s.offset,
        ...(noRange || min === undefined ? {} : { min }),
        ...(noRange || max === undefined ? {} : { max }),
        unit: s.unit,
        ...(l?.length ? { labels: l } : {}),
        multiplexer: s.mux?.endsWith("M") ?? false,
        ...(muxedBy ? { muxedBy } : {}),
      };
    });
    const frameFormat = enumName("VFrameFormat", attr(m.rawId, "VFrameFormat"));
    const cycle = Number(attr(m.rawId, "GenMsgCycleTime"));
    c.def = {
      name: m.name,
      id: c.id,
      extended,
      fd: m.length > 8 || (frameFormat?.endsWith("_FD") ?? false),
      length: m.length,
      ...(Number.isInteger(cycle) && cycle > 0 ? { cycleTimeMs: cycle } : {}),
      signals,
    };
    return c;
  });
}
