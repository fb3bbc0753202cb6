import { describe, expect, it } from "vitest";
import { batchesByRows, rowTarget, uncoveredRows, type Window } from "../../db/migrate/plan.js";

const H = 3_600_000;
const DAY = 24 * H;
const w = (h: number): Window => [h * H, (h + 1) * H];

describe("legacy migration plan: batches by rows", () => {
  it("joins neighbouring windows up to the target and splits a window denser than it", () => {
    const { batches, rows } = batchesByRows([w(0), w(1), w(2), w(5), w(6)], [40, 50, 30, 250, 10], 100);
    expect(batches).toEqual([
      [0, 2 * H], // 40 + 50; the third window would pass 100
      [2 * H, 3 * H],
      // 250 rows in three slices (a split window starts batches of its own), the
      // last joined by the next window
      [5 * H, 5 * H + H / 3],
      [5 * H + H / 3, 5 * H + (2 * H) / 3],
      [5 * H + (2 * H) / 3, 7 * H],
    ]);
    expect(rows).toEqual([90, 30, 84, 84, 94]);
  });

  it("never joins across a gap longer than 30 days: a stray row stays a batch of its own", () => {
    const stray: Window = [-40 * DAY, -40 * DAY + H];
    const { batches } = batchesByRows([stray, w(0), w(1)], [1, 5, 5], 1000);
    expect(batches).toEqual([stray, [0, 2 * H]]);
  });

  it("the target: at most batchRows, and at least four batches per session for a small table", () => {
    expect(rowTarget(10_000_000, { batchRows: 100_000, parallel: 2 })).toBe(100_000);
    expect(rowTarget(500_000, { batchRows: 100_000, parallel: 2 })).toBe(62_500);
    expect(rowTarget(3, { batchRows: 100_000, parallel: 2 })).toBe(1);
    expect(rowTarget(0, { batchRows: 100_000, parallel: 2 })).toBe(1);
  });

  it("a resumed run: the parts no checkpoint covers, each with its share of its window's rows", () => {
    const done: Window[] = [[0, 1.5 * H]];
    expect(uncoveredRows([w(0), w(1), w(2)], [100, 100, 60], done)).toEqual({
      windows: [
        [1.5 * H, 2 * H],
        [2 * H, 3 * H],
      ],
      rows: [50, 60],
    });
  });
});
