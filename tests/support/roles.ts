import type pg from "pg";
import { ROLES, type ServiceRole } from "../../db/roles.js";

// The platform's database roles on the test clusters: every service in a test
// connects with its own role, so a missing grant fails the test.

/** `url` with the user of one of the platform's roles (the test clusters trust 127.0.0.1: no password). */
export function roleUrl(url: string, client: ServiceRole): string {
  const u = new URL(url);
  u.username = ROLES[client];
  u.password = "";
  return u.toString();
}

/**
 * Let the platform's roles log in on a cluster the tests own. The schema creates
 * them NOLOGIN (a deployment gives them LOGIN and a password); ops/stack.sh does
 * this for the stack's cluster, this for the private ones of the fault tests.
 */
export async function enableRoleLogins(db: Pick<pg.ClientBase, "query">): Promise<void> {
  for (const role of Object.values(ROLES)) await db.query(`ALTER ROLE ${role} LOGIN`);
}
