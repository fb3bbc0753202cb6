import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../pipeline/runtime/log.js";
import { projectPath } from "../../pipeline/runtime/paths.js";
import { SensorMap } from "../../stages/sensor-map.js";
import { createTestDatabase, type TestDatabase } from "../support/db.js";

// The worker's sensor map checks its files every refreshMs: unchanged files keep
// the very table it has (nothing parsed), a changed valid file replaces it, a
// broken one keeps the previous table.

let db: TestDatabase;
let dir: string;
const problems: (string | null)[] = [];
const ctx = {
  log: createLogger("sensor-map-reload", "silent"),
  problem: (c: string | null) => void problems.push(c),
};

beforeAll(async () => {
  db = await createTestDatabase();
  dir = await mkdtemp(join(tmpdir(), "cea-map-"));
  await copyFile(projectPath("ops/site.json"), join(dir, "site.json"));
  await copyFile(projectPath("ops/cea.kcd"), join(dir, "cea.kcd"));
});
afterAll(async () => {
  await db?.drop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const sensor101 = (m: SensorMap) =>
  Object.values(m.table.messages)
    .flatMap((msg) => msg.signals)
    .find((s) => s.sensorId === 101);

describe("sensor map reload", () => {
  it("keeps its table while the files are unchanged, takes a changed one, keeps the old one on a broken file", async () => {
    const map = new SensorMap({ siteFile: join(dir, "site.json"), canDbFile: join(dir, "cea.kcd") }, db.pool, 60_000);
    await map.start(ctx);
    try {
      const first = map.table;
      expect(sensor101(map)).toBeDefined();
      await map.reload("test: unchanged");
      expect(map.table).toBe(first);

      const site = JSON.parse(await readFile(join(dir, "site.json"), "utf8"));
      const s101 = site.devices
        .flatMap((d: { sensors: { id: number }[] }) => d.sensors)
        .find((s: { id: number }) => s.id === 101);
      s101.calibration_offset = 0.25;
      await writeFile(join(dir, "site.json"), JSON.stringify(site));
      await map.reload("test: changed");
      expect(map.table).not.toBe(first);
      expect(sensor101(map)?.calibration).toBe(0.25);

      const changed = map.table;
      await writeFile(join(dir, "site.json"), "{ not json");
      await map.reload("test: broken");
      expect(map.table).toBe(changed);
    } finally {
      map.stop();
    }
  });
});
