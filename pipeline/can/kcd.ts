import { SaxesParser } from "saxes";
import { ConfigError } from "../runtime/errors.js";
import type { Candidate } from "./candb.js";
import { FD_LENGTHS, type Label, signalBits } from "./model.js";

// KCD (Kayak CAN definition, XML) → candidate messages. Our own reader over a
// strict XML parser: the socketcan package's parser keeps only the first
// <Multiplex> of a message and no line numbers. Semantics as Kayak defines
// them: ids in hex, format="extended" for 29-bit ids; offsets count bits from
// bit 0 of byte 0, for big-endian signals the offset of the most significant
// bit counted from the most significant bit of byte 0; Value type
// unsigned | signed | single | double; <Multiplex> is a signal that selects
// the <MuxGroup count="n"> whose signals a frame carries. A length over 8 bytes
// is a CAN FD message.

interface XmlNode {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  line: number;
}

function parseXml(text: string, file: string): XmlNode {
  const parser = new SaxesParser({ xmlns: false, position: true });
  const root: XmlNode = { name: "#document", attrs: {}, children: [], line: 0 };
  const stack: XmlNode[] = [root];
  let failure: string | null = null;
  parser.on("error", (err) => {
    failure ??= err.message;
  });
  parser.on("opentag", (tag) => {
    const attrs: Record<string, string> = {};
    for (const [k, v] of Object.entries(tag.attributes)) attrs[k.replace(/^.*:/, "")] = String(v);
    const node: XmlNode = { name: tag.name.replace(/^.*:/, ""), attrs, children: [], line: parser.line };
    stack[stack.length - 1]!.children.push(node);
    stack.push(node);
  });
  parser.on("closetag", () => {
    stack.pop();
  });
  try {
    parser.write(text).close();
  } catch (err) {
    failure ??= (err as Error).message;
  }
  if (failure) throw new ConfigError(`${file}: not well-formed XML: ${failure}`);
  return root;
}

const kids = (n: XmlNode, name: string) => n.children.filter((c) => c.name === name);

/** A number attribute; undefined when absent; throws a reason when present but not a number. */
function num(n: XmlNode, attr: string, int = false): number | undefined {
  const v = n.attrs[attr];
  if (v === undefined) return undefined;
  const x = v.trim() === "" ? Number.NaN : Number(v);
  if (!Number.isFinite(x) || (int && !Number.isInteger(x)))
    throw new Error(`${attr}="${v}" is not ${int ? "an integer" : "a number"}`);
  return x;
}

/** A range bound; one beyond a double (1E+481) is no bound at all. */
function bound(n: XmlNode, attr: string): number | undefined {
  const v = n.attrs[attr];
  if (v === undefined) return undefined;
  const x = v.trim() === "" ? Number.NaN : Number(v);
  if (Number.isNaN(x)) throw new Error(`${attr}="${v}" is not a number`);
  return Number.isFinite(x) ? x : undefined;
}

interface RawSignal {
  name: string;
  startBit: number;
  length: number;
  byteOrder: "little" | "big";
  valueType: string;
  factor: number;
  offset: number;
  min: number | undefined;
  max: number | undefined;
  unit: string;
  labels: Label[] | undefined;
  multiplexer: boolean;
  muxedBy: { selector: string; values: number[] } | undefined;
}

const VALUE_TYPES: Record<string, string> = {
  unsigned: "unsigned",
  signed: "signed",
  single: "float32",
  double: "float64",
};

function signalOf(n: XmlNode, multiplexer: boolean): RawSignal {
  const name = n.attrs.name ?? "";
  const offset = num(n, "offset", true);
  if (offset === undefined) throw new Error("no offset");
  const length = num(n, "length", true) ?? 1;
  const endianess = n.attrs.endianess ?? "little";
  if (endianess !== "little" && endianess !== "big") throw new Error(`endianess="${endianess}" is not little or big`);
  const value = kids(n, "Value")[0];
  const type = value?.attrs.type ?? "unsigned";
  const valueType = VALUE_TYPES[type];
  if (!valueType) throw new Error(`Value type="${type}" is not unsigned, signed, single or double`);
  const labels: Label[] = [];
  for (const set of kids(n, "LabelSet")) {
    for (const l of set.children) {
      if (l.name === "Label") {
        const v = num(l, "value", true);
        if (v !== undefined) labels.push({ from: v, to: v, name: l.attrs.name ?? "" });
      } else if (l.name === "LabelGroup") {
        const from = num(l, "from", true);
        const to = num(l, "to", true);
        if (from !== undefined && to !== undefined) labels.push({ from, to, name: l.attrs.name ?? "" });
      }
    }
  }
  return {
    name,
    // big endian: Kayak counts the MSB's position from the MSB of byte 0
    startBit: endianess === "big" ? 8 * Math.floor(offset / 8) + 7 - (offset % 8) : offset,
    length,
    byteOrder: endianess,
    valueType,
    factor: (value && num(value, "slope")) ?? 1,
    offset: (value && num(value, "intercept")) ?? 0,
    min: value && bound(value, "min"),
    max: value && bound(value, "max"),
    unit: value?.attrs.unit ?? "",
    labels: labels.length ? labels : undefined,
    multiplexer,
    muxedBy: undefined,
  };
}

const sameLayout = (a: RawSignal, b: RawSignal) =>
  JSON.stringify({ ...a, muxedBy: a.muxedBy?.selector }) === JSON.stringify({ ...b, muxedBy: b.muxedBy?.selector });

export function parseKcd(text: string, file: string): Candidate[] {
  const doc = parseXml(text, file);
  const net = doc.children[0];
  if (net?.name !== "NetworkDefinition")
    throw new ConfigError(
      `${file}: not a KCD file: the root element is <${net?.name ?? "none"}>, not <NetworkDefinition>`,
    );
  const buses = kids(net, "Bus");
  if (buses.length === 0) throw new ConfigError(`${file}: NetworkDefinition: no <Bus> with messages`);
  const out: Candidate[] = [];
  for (const bus of buses) {
    for (const msg of kids(bus, "Message")) {
      const name = msg.attrs.name ?? "";
      const c: Candidate = {
        name,
        id: undefined,
        extended: msg.attrs.format === "extended",
        where: `${file}:${msg.line}: Bus "${bus.attrs.name ?? ""}"`,
        def: undefined,
        problems: [],
      };
      out.push(c);
      const idText = msg.attrs.id ?? "";
      if (!/^0x[0-9a-f]+$/i.test(idText)) {
        c.problems.push({ signal: undefined, reason: `id="${idText}" is not a hex id (0x…)` });
        continue;
      }
      c.id = Number.parseInt(idText.slice(2), 16);
      if (msg.attrs.remote === "true") {
        c.problems.push({ signal: undefined, reason: "a remote frame carries no data" });
        continue;
      }
      const signals: RawSignal[] = [];
      const add = (s: RawSignal) => {
        // the same signal listed in several mux groups (same layout) is one signal with several values
        const prev = signals.find((p) => p.name === s.name);
        if (prev && s.muxedBy && prev.muxedBy && sameLayout(prev, s)) prev.muxedBy.values.push(...s.muxedBy.values);
        else signals.push(s);
      };
      const read = (n: XmlNode, multiplexer: boolean): RawSignal | null => {
        try {
          return signalOf(n, multiplexer);
        } catch (err) {
          c.problems.push({ signal: n.attrs.name ?? `line ${n.line}`, reason: (err as Error).message });
          return null;
        }
      };
      for (const mux of kids(msg, "Multiplex")) {
        const sel = read(mux, true);
        if (!sel) continue;
        add(sel);
        for (const group of kids(mux, "MuxGroup")) {
          let count: number | undefined;
          try {
            count = num(group, "count", true);
          } catch (err) {
            c.problems.push({ signal: sel.name, reason: `MuxGroup ${(err as Error).message}` });
          }
          if (count === undefined) {
            c.problems.push({ signal: sel.name, reason: `MuxGroup at line ${group.line} has no count` });
            continue;
          }
          for (const sn of kids(group, "Signal")) {
            const s = read(sn, false);
            if (s) add({ ...s, muxedBy: { selector: sel.name, values: [count] } });
          }
        }
      }
      for (const sn of kids(msg, "Signal")) {
        const s = read(sn, false);
        if (s) add(s);
      }
      let length: number | undefined;
      try {
        length = msg.attrs.length === "auto" ? undefined : num(msg, "length", true);
      } catch (err) {
        c.problems.push({ signal: undefined, reason: (err as Error).message });
      }
      if (length === undefined) {
        // "auto" or absent: the smallest frame that holds every signal
        const last = Math.max(-1, ...signals.flatMap((s) => signalBits(s)));
        const bytes = (last >> 3) + 1;
        length = bytes <= 8 ? bytes : (FD_LENGTHS.find((l) => l >= bytes) ?? bytes);
      }
      let interval: number | undefined;
      try {
        interval = num(msg, "interval", true);
      } catch (err) {
        c.problems.push({ signal: undefined, reason: (err as Error).message });
      }
      c.def = {
        name,
        id: c.id,
        extended: c.extended,
        fd: length > 8,
        length,
        ...(interval ? { cycleTimeMs: interval } : {}),
        signals: signals.map(({ min, max, labels, muxedBy, ...s }) => ({
          ...s,
          ...(min === undefined ? {} : { min }),
          ...(max === undefined ? {} : { max }),
          ...(labels ? { labels } : {}),
          ...(muxedBy ? { muxedBy } : {}),
        })),
      };
    }
  }
  return out;
}
