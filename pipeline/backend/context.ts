import type { FastifyReply, FastifyRequest } from "fastify";
import type { Redis } from "ioredis";
import type pg from "pg";
import type { SiteActuator } from "../../db/site.js";
import type { Config } from "../runtime/config.js";
import type { RedisKeys } from "../runtime/keys.js";
import type { AlertEvaluator } from "./alerts.js";
import type { Directory } from "./directory.js";
import type { GroupWriter } from "./group-writer.js";
import type { SensorLabels } from "./labels.js";

/** What every router gets: built once at start-up and handed in, never imported. */
export interface ApiContext {
  config: Config;
  pool: pg.Pool;
  redis: Redis;
  keys: RedisKeys;
  directory: Directory;
  /** group commit of the single-reading route */
  writer: GroupWriter;
  /** the alert conditions, evaluated on a timer while the app runs */
  alerts: AlertEvaluator;
  /** the site file's actuators: a setpoint is checked against those of its room */
  actuators: readonly SiteActuator[];
  /** the sensors' value tables (CAN database): names of status values in live, history and sensor answers */
  labels: SensorLabels;
  /** onRequest hook: 401 unless the request carries the bearer token */
  requireToken: (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
}
