import type { Queryable } from "../../db/pool.js";
import { getFacility, roomIds, sensorRooms } from "../../db/queries/metadata.js";

// The ids the write and history routes check on every request, cached. A miss
// reloads (one load at a time, at most once a second), so a sensor added by a
// site sync is seen without a restart and unknown ids cannot hammer the database.
export class Directory {
  private sensors = new Map<number, number>();
  private rooms = new Set<number>();
  private tz = "UTC";
  private loadedAt = 0;
  private loading: Promise<void> | undefined;

  constructor(
    private readonly db: Queryable,
    private readonly minReloadMs = 1_000,
  ) {}

  private load(): Promise<void> {
    this.loading ??= (async () => {
      try {
        const [sensors, rooms, facility] = await Promise.all([
          sensorRooms(this.db),
          roomIds(this.db),
          getFacility(this.db),
        ]);
        this.sensors = new Map(sensors.map((s) => [s.id, s.room_id]));
        this.rooms = new Set(rooms);
        this.tz = facility?.timezone ?? "UTC";
        this.loadedAt = Date.now();
      } finally {
        this.loading = undefined;
      }
    })();
    return this.loading;
  }

  private async refreshOnMiss(): Promise<void> {
    if (this.loading) return this.loading;
    if (this.loadedAt !== 0 && Date.now() - this.loadedAt < this.minReloadMs) return;
    await this.load();
  }

  /** The ids among `ids` that are not sensors, after one reload if any was missing. */
  async unknownSensors(ids: Iterable<number>): Promise<number[]> {
    if (this.loadedAt === 0) await this.load();
    let missing = [...new Set(ids)].filter((i) => !this.sensors.has(i));
    if (missing.length === 0) return missing;
    await this.refreshOnMiss();
    missing = missing.filter((i) => !this.sensors.has(i));
    return missing;
  }

  /** Sensor ids of a room, or undefined when there is no such room. */
  async roomSensors(roomId: number): Promise<number[] | undefined> {
    if (this.loadedAt === 0) await this.load();
    if (!this.rooms.has(roomId)) await this.refreshOnMiss();
    if (!this.rooms.has(roomId)) return undefined;
    return [...this.sensors].filter(([, room]) => room === roomId).map(([sid]) => sid);
  }

  async timezone(): Promise<string> {
    if (this.loadedAt === 0) await this.load();
    return this.tz;
  }
}
