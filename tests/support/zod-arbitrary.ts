import fc from "fast-check";
import type { z } from "zod";

// fast-check arbitraries generated from zod (v4) schemas themselves: walking
// the schema's definition, each part yields values of the input type it
// describes, biased towards the edges of its checks (lengths, ranges, formats)
// and mixed with values just outside them. What the schema admits and what it
// refuses both come out; the caller asks the schema which is which
// (safeParse), so the generator never has to know the refinements.

interface Def {
  type: string;
  checks?: { _zod: { def: Record<string, unknown> } }[];
  format?: string;
  pattern?: RegExp;
  shape?: Record<string, z.ZodType>;
  catchall?: z.ZodType;
  element?: z.ZodType;
  innerType?: z.ZodType;
  in?: z.ZodType;
  entries?: Record<string, string | number>;
  values?: unknown[];
  options?: z.ZodType[];
}

const defOf = (s: z.ZodType) => (s as unknown as { _zod: { def: Def } })._zod.def;
const checksOf = (d: Def) => (d.checks ?? []).map((c) => c._zod.def);

/** Values for a field, by name, mixed into what the schema generates (e.g. ids that exist). */
export type Hints = Record<string, fc.Arbitrary<unknown>>;

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/**
 * RFC 3339 date-times around every edge the API and PostgreSQL have: years
 * 0000–9999 (mostly recent ones), offsets up to ±23:59 (and a few beyond),
 * fractions of 0–9 digits, impossible dates and times now and then.
 */
export const rfc3339 = (recentFrom = 2000, recentTo = new Date().getUTCFullYear()): fc.Arbitrary<string> =>
  fc
    .record({
      year: fc.oneof(
        { weight: 12, arbitrary: fc.integer({ min: recentFrom, max: recentTo }) },
        { weight: 2, arbitrary: fc.integer({ min: 0, max: 9999 }) },
        { weight: 1, arbitrary: fc.constantFrom(0, 1, 9999) },
      ),
      month: fc.oneof({ weight: 30, arbitrary: fc.integer({ min: 1, max: 12 }) }, fc.constantFrom(0, 13)),
      day: fc.oneof({ weight: 30, arbitrary: fc.integer({ min: 1, max: 28 }) }, fc.integer({ min: 29, max: 32 })),
      hour: fc.oneof({ weight: 30, arbitrary: fc.integer({ min: 0, max: 23 }) }, fc.constant(24)),
      minute: fc.integer({ min: 0, max: 59 }),
      second: fc.oneof({ weight: 30, arbitrary: fc.integer({ min: 0, max: 59 }) }, fc.constant(60)),
      fraction: fc
        .oneof(
          { weight: 3, arbitrary: fc.constant("") },
          { weight: 6, arbitrary: fc.integer({ min: 1, max: 6 }) },
          { weight: 1, arbitrary: fc.integer({ min: 7, max: 9 }) },
        )
        .chain((n) => (n === "" ? fc.constant("") : fc.stringMatching(new RegExp(`^\\.[0-9]{${n}}$`)))),
      offset: fc.oneof(
        { weight: 12, arbitrary: fc.constant("Z") },
        {
          weight: 24,
          arbitrary: fc
            .tuple(
              fc.constantFrom("+", "-"),
              fc.oneof({ weight: 30, arbitrary: fc.integer({ min: 0, max: 23 }) }, fc.constant(24)),
              fc.integer({ min: 0, max: 59 }),
            )
            .map(([s, h, m]) => `${s}${pad(h)}:${pad(m)}`),
        },
        fc.constantFrom("+0000", "z", "+16", ""),
      ),
    })
    .map(
      (t) =>
        `${pad(t.year, 4)}-${pad(t.month)}-${pad(t.day)}T${pad(t.hour)}:${pad(t.minute)}:${pad(t.second)}` +
        `${t.fraction}${t.offset}`,
    );

function stringArbitrary(d: Def): fc.Arbitrary<string> {
  const checks = checksOf(d);
  let min = 0;
  let max = 40;
  const formats: fc.Arbitrary<string>[] = [];
  if (d.format === "datetime") formats.push(rfc3339());
  for (const c of checks) {
    if (c.check === "min_length") min = c.minimum as number;
    if (c.check === "max_length") max = c.maximum as number;
    if (c.check === "string_format" && c.format === "regex" && c.pattern instanceof RegExp)
      formats.push(fc.stringMatching(c.pattern));
  }
  const near = (n: number) => fc.integer({ min: Math.max(0, n - 1), max: n + 1 });
  const any = fc.oneof(
    { weight: 6, arbitrary: fc.string({ unit: "grapheme", minLength: min, maxLength: Math.min(max, 40) }) },
    fc.string({ unit: "binary", maxLength: Math.min(max + 1, 40) }),
    // lengths at the bounds
    near(max).chain((n) => fc.string({ unit: fc.constantFrom("a", "é", "😀"), minLength: n, maxLength: n })),
    // what text columns and protocols stumble on
    fc.constantFrom(
      "",
      " ",
      "\u0000",
      "a\u0000b",
      "\u0001",
      "\u007f",
      "\n",
      "\ud800",
      "x\udfff",
      "=1+1",
      "%00",
      "'",
      '"',
      "\\",
    ),
  );
  return formats.length > 0 ? fc.oneof({ weight: 9, arbitrary: fc.oneof(...formats) }, any) : any;
}

function numberArbitrary(d: Def): fc.Arbitrary<number> {
  let lo = -Number.MAX_VALUE;
  let hi = Number.MAX_VALUE;
  let int = false;
  for (const c of checksOf(d)) {
    if (c.check === "number_format") int = true;
    if (c.check === "greater_than") lo = (c.value as number) + (c.inclusive ? 0 : int ? 1 : Number.EPSILON);
    if (c.check === "less_than") hi = (c.value as number) - (c.inclusive ? 0 : int ? 1 : Number.EPSILON);
  }
  const edges = [
    lo,
    hi,
    lo - 1,
    hi + 1,
    0,
    -0,
    1,
    -1,
    5e-324,
    -5e-324,
    1.7976931348623157e308,
    -1.7976931348623157e308,
  ];
  return fc.oneof(
    {
      weight: 8,
      arbitrary: int
        ? fc.integer({ min: Math.max(lo, -(2 ** 31)), max: Math.min(hi, 2 ** 31 - 1) })
        : fc.double({ noNaN: true, noDefaultInfinity: true }),
    },
    { weight: 2, arbitrary: fc.constantFrom(...edges.filter((n) => Number.isFinite(n))) },
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.integer({ min: -(2 ** 53) + 1, max: 2 ** 53 - 1 }),
  );
}

/** An arbitrary of inputs for `schema` (its input type, edges included, some values outside it). */
export function arbitraryOf(schema: z.ZodType, hints: Hints = {}, name = ""): fc.Arbitrary<unknown> {
  const d = defOf(schema);
  const hinted = (a: fc.Arbitrary<unknown>) => {
    const h = hints[name];
    return h ? fc.oneof(a, h) : a;
  };
  switch (d.type) {
    case "string":
      return hinted(stringArbitrary(d));
    case "number":
      return hinted(numberArbitrary(d));
    case "boolean":
      return fc.boolean();
    case "null":
      return fc.constant(null);
    case "enum": {
      const values = Object.values(d.entries ?? {});
      return fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...values) }, fc.constantFrom("", "RAW", "other"));
    }
    case "literal":
      return fc.constantFrom(...(d.values ?? []));
    case "optional":
    case "default":
      return fc.option(arbitraryOf(d.innerType!, hints, name), { nil: undefined, freq: 3 });
    case "nullable":
      return fc.option(arbitraryOf(d.innerType!, hints, name), { nil: null, freq: 3 });
    case "pipe":
      return arbitraryOf(d.in!, hints, name);
    case "union":
      return fc.oneof(...(d.options ?? []).map((o) => arbitraryOf(o, hints, name)));
    case "array": {
      let min = 0;
      let max = 5;
      for (const c of checksOf(d)) {
        if (c.check === "min_length") min = c.minimum as number;
        if (c.check === "max_length") max = Math.min(max, c.maximum as number);
      }
      return fc.array(arbitraryOf(d.element!, hints, name), { minLength: Math.max(0, min - 1), maxLength: max });
    }
    case "object": {
      const shape = d.shape ?? {};
      const keys = Object.keys(shape);
      const fields = Object.fromEntries(keys.map((k) => [k, arbitraryOf(shape[k]!, hints, k)]));
      const optional = (k: string) => ["optional", "default"].includes(defOf(shape[k]!).type);
      const required = keys.filter((k) => !optional(k));
      const record = fc.record(fields, { requiredKeys: required }).map((o) => {
        // an optional field generated as undefined is left out, as a client would
        const out: Record<string, unknown> = {};
        for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
        return out;
      });
      const variants: fc.WeightedArbitrary<Record<string, unknown>>[] = [{ weight: 15, arbitrary: record }];
      if (required.length > 0)
        variants.push({
          weight: 1,
          arbitrary: fc.tuple(record, fc.constantFrom(...required)).map(([r, gone]) => {
            const { [gone]: _, ...rest } = r;
            return rest;
          }),
        });
      const strict = d.catchall !== undefined && defOf(d.catchall).type === "never";
      if (strict) {
        const extra = fc.dictionary(fc.string({ minLength: 1, maxLength: 10 }), fc.jsonValue(), { maxKeys: 2 });
        variants.push({ weight: 1, arbitrary: fc.tuple(record, extra).map(([r, e]) => ({ ...e, ...r })) });
      }
      return fc.oneof(...variants);
    }
    default:
      return fc.jsonValue();
  }
}
