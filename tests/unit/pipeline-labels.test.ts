import { describe, expect, it } from "vitest";
import { valueLabels } from "../../pipeline/can/labels.js";
import type { SignalDef } from "../../pipeline/can/model.js";

// Value tables in terms of stored values: the file names raw values; a reading
// holds raw × factor + offset + calibration_offset, as the decoder computes it.

const signal = (over: Partial<SignalDef>): SignalDef => ({
  name: "State",
  startBit: 0,
  length: 8,
  byteOrder: "little",
  valueType: "unsigned",
  factor: 1,
  offset: 0,
  unit: "",
  multiplexer: false,
  ...over,
});

describe("valueLabels", () => {
  it("a signal without a value table has none", () => {
    expect(valueLabels(signal({}), 0)).toBeUndefined();
    expect(valueLabels(signal({ labels: [] }), 0)).toBeUndefined();
  });

  it("names a stored value of a plain status signal; an unlisted value has null", () => {
    const l = valueLabels(
      signal({
        labels: [
          { from: 0, to: 0, name: "OK" },
          { from: 3, to: 3, name: "Fault" },
          { from: 255, to: 255, name: "No sensor" },
        ],
      }),
      0,
    );
    expect(l?.table).toEqual({ "0": "OK", "3": "Fault", "255": "No sensor" });
    expect(l?.of(255)).toBe("No sensor");
    expect(l?.of(3)).toBe("Fault");
    expect(l?.of(7)).toBeNull();
    expect(l?.of(3.5)).toBeNull();
  });

  it("scaling, offset and calibration_offset: keyed by the stored value, exactly as decoded", () => {
    // raw 1 → 1 × 0.1 − 40 = −39.9, + calibration 0.5 = −39.4
    const l = valueLabels(
      signal({ factor: 0.1, offset: -40, length: 16, labels: [{ from: 1, to: 1, name: "Low" }] }),
      0.5,
    );
    const stored = 1 / 10 - 40 + 0.5;
    expect(l?.table).toEqual({ [String(stored)]: "Low" });
    expect(l?.of(stored)).toBe("Low");
    expect(l?.of(1)).toBeNull();
  });

  it("a label for a raw value the bits cannot hold names nothing; a signed raw value does", () => {
    const l = valueLabels(
      signal({
        length: 4,
        valueType: "signed",
        labels: [
          { from: -1, to: -1, name: "Unknown" },
          { from: 255, to: 255, name: "Never" },
        ],
      }),
      0,
    );
    expect(l?.table).toEqual({ "-1": "Unknown" });
    expect(l?.of(-1)).toBe("Unknown");
    expect(l?.of(255)).toBeNull();
  });

  it("ranges (KCD LabelGroup): keyed lo..hi; small ones by value, wide ones by inversion", () => {
    const l = valueLabels(
      signal({
        length: 16,
        factor: 2,
        labels: [
          { from: 1, to: 1, name: "One" },
          { from: 1, to: 9, name: "Low" },
          { from: 10, to: 60_000, name: "High" },
        ],
      }),
      0,
    );
    expect(l?.table).toEqual({ "2": "One", "2..18": "Low", "20..120000": "High" });
    expect(l?.of(2)).toBe("One"); // the first entry for a value wins
    expect(l?.of(18)).toBe("Low");
    expect(l?.of(17)).toBeNull(); // no raw value decodes to 17
    expect(l?.of(100_000)).toBe("High");
    expect(l?.of(100_001)).toBeNull();
    expect(l?.of(120_002)).toBeNull();
  });

  it("a float signal: only integer raw values are named", () => {
    const l = valueLabels(
      signal({ length: 32, valueType: "float32", labels: [{ from: 0, to: 100_000, name: "Valid" }] }),
      0,
    );
    expect(l?.of(5)).toBe("Valid");
    expect(l?.of(5.5)).toBeNull();
    expect(l?.of(-1)).toBeNull();
  });
});
