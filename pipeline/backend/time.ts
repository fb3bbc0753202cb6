// Instants as the API takes them (RFC 3339 with an offset, up to microseconds)
// and as it hands them to PostgreSQL and back: UTC, "YYYY-MM-DDTHH:MM:SS.ffffffZ".
// PostgreSQL refuses offsets beyond ±15:59 and years before 1 (a timestamptz
// is stored in UTC anyway), so every instant is converted to that canonical UTC
// text here, exactly (microseconds included), and the database only ever sees
// it. Canonical texts of years 0001–9999 sort as the instants do, so windows
// are compared on the text, to the microsecond.

const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:Z|([+-])(\d{2}):(\d{2}))$/;

/** The earliest and latest instant the API accepts anywhere (what a timestamptz column holds and prints as 4 digits). */
export const INSTANT_MIN = "0001-01-01T00:00:00.000000Z";
export const INSTANT_MAX = "9999-12-31T23:59:59.999999Z";

const pad2 = (n: number) => (n < 10 ? `0${n}` : String(n));
const isLeap = (y: number) => (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
const DAYS = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
const daysIn = (y: number, m: number) => (m === 2 && isLeap(y) ? 29 : DAYS[m - 1]!);

/**
 * The canonical UTC text of an RFC 3339 date-time with an offset, or undefined
 * when the text is not one or the instant in UTC falls outside years 1–9999.
 * The caller has checked the calendar (zod's ISO date-time check): this only
 * shifts by the offset, in whole minutes, keeping the fraction as written.
 * Plain integer arithmetic on the fields: a batch converts thousands of these.
 */
export function toUtc(text: string): string | undefined {
  const m = RFC3339.exec(text);
  if (!m) return undefined;
  const [, ys, mos, ds, hs, mis, ss, frac = "", sign, oh, om] = m;
  if (frac.length > 6) return undefined;
  const fraction = `.${frac.padEnd(6, "0")}Z`;
  const offset = sign ? (sign === "-" ? -1 : 1) * (Number(oh) * 60 + Number(om)) : 0;
  let y = Number(ys);
  if (offset === 0) return y >= 1 ? `${text.slice(0, 19)}${fraction}` : undefined;
  let mo = Number(mos);
  let d = Number(ds);
  let minutes = Number(hs) * 60 + Number(mis) - offset;
  // an offset is under a day, so the date moves by one day at most
  if (minutes < 0) {
    minutes += 1440;
    if (--d < 1) {
      if (--mo < 1) {
        mo = 12;
        y--;
      }
      d = daysIn(y, mo);
    }
  } else if (minutes >= 1440) {
    minutes -= 1440;
    if (++d > daysIn(y, mo)) {
      d = 1;
      if (++mo > 12) {
        mo = 1;
        y++;
      }
    }
  }
  if (y < 1 || y > 9999) return undefined;
  const h = Math.floor(minutes / 60);
  return `${String(y).padStart(4, "0")}-${pad2(mo)}-${pad2(d)}T${pad2(h)}:${pad2(minutes - h * 60)}:${ss}${fraction}`;
}

/** Milliseconds since the epoch of a canonical UTC text (the microseconds truncated). */
export const utcMillis = (utc: string): number => Date.parse(utc);

/** The canonical UTC text of a JavaScript time (millisecond precision). */
export function utcOf(ms: number): string {
  const iso = new Date(ms).toISOString();
  return `${iso.slice(0, -1)}000Z`;
}
