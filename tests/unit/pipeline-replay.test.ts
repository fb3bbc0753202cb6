import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadSite } from "../../db/site.js";
import type { CanFrame } from "../../pipeline/can/frame.js";
import { formatCandumpLine, parseCandumpLine, ReplayError, replaySource } from "../../pipeline/can/replay.js";
import { simulatedSecond } from "../../pipeline/can/simulator.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { loadDecodeTable } from "../../stages/resolve-sensor.js";

async function collect(src: AsyncIterable<CanFrame[]>): Promise<CanFrame[]> {
  const out: CanFrame[] = [];
  for await (const chunk of src) out.push(...chunk);
  return out;
}

describe("candump -l replay", () => {
  it("parses standard, extended, empty and remote frames", () => {
    const f = parseCandumpLine("(1700000000.123456) can0 101#0A1B2C3D", 1, "x.log");
    expect(f).toEqual({
      ts: "2023-11-14T22:13:20.123456Z",
      id: 0x101,
      ext: false,
      fd: false,
      data: Buffer.from("0A1B2C3D", "hex"),
      iface: "can0",
    });
    expect(parseCandumpLine("(1700000000.000001) vcan1 1ABCDEF0#", 2, "x.log")).toMatchObject({
      id: 0x1abcdef0,
      iface: "vcan1",
      ts: "2023-11-14T22:13:20.000001Z",
    });
    expect(parseCandumpLine("(1700000000.5) can0 123#R", 3, "x.log")).toBeNull();
    expect(parseCandumpLine("   ", 4, "x.log")).toBeNull();
  });

  it("names file and line of a malformed line", () => {
    expect(() => parseCandumpLine("(1700000001.000000) can0 101#0", 3, "x.log")).toThrow(
      new ReplayError('x.log:3: data must be 0-8 bytes of hex, got "0"'),
    );
    expect(() => parseCandumpLine("(17.1) can0 12345#00", 9, "y.log")).toThrow(/^y\.log:9: not a candump -l line/);
    // CAN FD payloads come in fixed sizes: 9 bytes is none of them
    expect(() => parseCandumpLine("(1700000000.000000) can0 101##1000000000000000000", 7, "y.log")).toThrow(
      /^y\.log:7: CAN FD data must be a CAN FD payload size/,
    );
    expect(() => parseCandumpLine("(1700000000.000000) can0 801#00", 8, "y.log")).toThrow(/801 is not an 11-bit id/);
    expect(() => parseCandumpLine("(999999999999.000000) can0 101#00", 8, "y.log")).toThrow(
      /^y\.log:8: time \(999999999999\.000000\) is past the year 9999$/,
    );
  });

  it("a bad line loses only itself: every good line is replayed, each bad one reported with file:line", async () => {
    // 1 500 good lines; bad ones inside the first 1 000-line chunk and at the end, where a power loss cut the file
    const good = Array.from(
      { length: 1_500 },
      (_, i) => `(${1_700_000_000 + i}.000000) can0 101#${(i % 256).toString(16).padStart(2, "0").toUpperCase()}`,
    );
    const lines = [...good];
    lines.splice(2, 0, "(1700000000.500000) can0 101#0"); // line 3
    lines.splice(699, 0, "\u0000\u0000garbage"); // line 700
    const text = `${lines.join("\n")}\n(1700001500.00`; // line 1503, cut short
    const dir = mkdtempSync(join(tmpdir(), "replay-"));
    const file = join(dir, "cut.log");
    writeFileSync(file, text);
    const skipped: string[] = [];
    const back = await collect(replaySource(file, 0, (e) => skipped.push(e.message)).frames());
    expect(back.map((f) => formatCandumpLine(f))).toEqual(good);
    expect(skipped).toEqual([
      `${file}:3: data must be 0-8 bytes of hex, got "0"`,
      expect.stringMatching(new RegExp(`^${file.replace(/[.]/g, "\\.")}:700: not a candump -l line`)),
      expect.stringMatching(new RegExp(`^${file.replace(/[.]/g, "\\.")}:1503: not a candump -l line`)),
    ]);
  });

  it("round-trips simulator frames through the writer and the parser", async () => {
    const siteFile = projectPath("ops/site.json");
    const { table } = await loadDecodeTable({ siteFile, canDbFile: projectPath("ops/cea.kcd") });
    const opts = {
      table,
      site: await loadSite(siteFile),
      startMs: Date.parse("2024-03-01T12:00:00Z"),
      speed: 1,
      iface: "can0",
    };
    const frames = [0, 1, 2, 3600].flatMap((k) => simulatedSecond(opts, k));
    const dir = mkdtempSync(join(tmpdir(), "replay-"));
    const file = join(dir, "sim.log");
    writeFileSync(file, `${frames.map(formatCandumpLine).join("\n")}\n`);
    const back = await collect(
      replaySource(file, 0, (e) => {
        throw e;
      }).frames(),
    );
    expect(back.map((f) => ({ ...f, data: Buffer.from(f.data).toString("hex") }))).toEqual(
      frames.map((f) => ({ ...f, data: Buffer.from(f.data).toString("hex") })),
    );
  });
});
