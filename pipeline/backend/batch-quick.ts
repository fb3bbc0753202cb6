import { z } from "zod";

// The batch route's quick path, derived from the item schema (no rule of its
// own): a batch repeats its values column by column (1 000 readings of 50
// sensors hold 20 instants and 50 ids), so each field's own schema runs once
// per distinct value of that field in the batch instead of once per item, and
// the items are rebuilt from those results. Whatever it cannot vouch for
// cheaply (not an array of plain objects, an unknown or missing key, a value
// that is not a primitive, any value its field's schema refuses) makes it step
// aside: the caller then parses the whole body with the schema, which decides
// and names every field at fault, so refusals do not change.

type Parsed<S extends z.ZodObject> = z.output<S>[];

/**
 * The quick path for `z.array(item).min(min).max(max)`: the parsed batch,
 * equal to what that schema's parse returns, or undefined to let the schema
 * decide. Each field's distinct values go through `z.array(field)` in one
 * parse (a column), so a batch pays the schema's per-call cost once per field.
 * A field schema that reads the clock (the future-time check) judges each
 * distinct value once: the whole batch is judged at one instant, as a batch is
 * one request.
 */
export function batchQuickPath<S extends z.ZodObject>(
  item: S,
  limits: { min: number; max: number },
): (data: unknown) => Parsed<S> | undefined {
  // a rule over the whole item (a refinement of the object) is not the fields' rules: never quick then
  if (item._zod.def.checks?.length) return () => undefined;
  const fields = Object.entries(item.shape as Record<string, z.ZodType>).map(([key, schema]) => ({
    key,
    column: z.array(schema),
    optional: schema.safeParse(undefined).success,
  }));
  return (data) => {
    if (!Array.isArray(data) || data.length < limits.min || data.length > limits.max) return undefined;
    const n = data.length;
    // per field: its distinct values, and per item the index of its value among them (-1: key absent)
    const distinct = fields.map(() => [] as unknown[]);
    const at = fields.map(() => new Int32Array(n));
    const seen = fields.map(() => new Map<unknown, number>());
    for (let i = 0; i < n; i++) {
      const it: unknown = data[i];
      if (typeof it !== "object" || it === null || Object.getPrototypeOf(it) !== Object.prototype) return undefined;
      const src = it as Record<string, unknown>;
      let present = 0;
      for (let f = 0; f < fields.length; f++) {
        const { key, optional } = fields[f]!;
        if (!Object.hasOwn(src, key)) {
          if (!optional) return undefined;
          at[f]![i] = -1;
          continue;
        }
        present++;
        const v = src[key];
        // objects are no field's type here (the schema names them); -0 is kept apart from 0 (a Map key conflates them)
        if ((typeof v === "object" && v !== null) || v === undefined || Object.is(v, -0)) return undefined;
        const m = seen[f]!;
        let k = m.get(v);
        if (k === undefined) {
          k = distinct[f]!.push(v) - 1;
          m.set(v, k);
        }
        at[f]![i] = k;
      }
      // a key the schema does not know (the strict object refuses it, naming it)
      if (Object.keys(src).length !== present) return undefined;
    }
    const parsed: unknown[][] = [];
    for (let f = 0; f < fields.length; f++) {
      const p = fields[f]!.column.safeParse(distinct[f]);
      if (!p.success) return undefined;
      parsed.push(p.data);
    }
    const out = new Array<Record<string, unknown>>(n);
    for (let i = 0; i < n; i++) {
      const row: Record<string, unknown> = {};
      for (let f = 0; f < fields.length; f++) {
        const k = at[f]![i]!;
        if (k >= 0) row[fields[f]!.key] = parsed[f]![k];
      }
      out[i] = row;
    }
    return out as Parsed<S>;
  };
}
