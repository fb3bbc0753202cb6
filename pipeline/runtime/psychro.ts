// Psychrometrics of the grow rooms: saturation vapour pressure, air and leaf
// VPD, dew point. Pure functions, no imports: the lowest layer, so the derived
// stage and the automation service compute the same numbers.
//
// Formula: FAO Irrigation and Drainage Paper 56 (Allen, Pereira, Raes, Smith
// 1998), chapter 3, equation 11 (Tetens 1930, Murray 1967 constants):
//
//   e°(T) = 0.6108 · exp(17.27 · T / (T + 237.3))   [kPa, T in °C]
//
// Over liquid water (below 0 °C it is the pressure over supercooled water, not
// ice: a dew point below 0 °C is not a frost point). Against the thermodynamic
// reference (Wagner & Pruß / IAPWS-95, as tabulated in the CRC Handbook) it is
// within 0.3 % from 0 to 40 °C (tests/unit/psychro.test.ts checks it).
//
// Actual vapour pressure from relative humidity: ea = e°(T) · RH / 100 (FAO-56
// eq. 19 for one instant). Dew point is the exact inverse of the same formula
// (FAO-56 eq. 14, ea = e°(Tdew)), so e°(dewPoint(T, RH)) = ea to rounding.

export const TETENS_A_KPA = 0.6108;
export const TETENS_B = 17.27;
export const TETENS_C_DEGC = 237.3;

/** The formula's lower bound: T = -C makes its denominator 0; below ~-40 °C it is meaningless anyway. */
const MIN_TEMP_C = -60;
const MAX_TEMP_C = 100;

function checkTemp(name: string, t: number): void {
  if (!Number.isFinite(t) || t < MIN_TEMP_C || t > MAX_TEMP_C)
    throw new RangeError(
      `${name} must be a finite temperature in °C between ${MIN_TEMP_C} and ${MAX_TEMP_C}, got ${t}`,
    );
}

function checkRh(rh: number, allowZero: boolean): void {
  if (!Number.isFinite(rh) || rh < 0 || rh > 100 || (!allowZero && rh === 0))
    throw new RangeError(
      `relative humidity must be a finite percentage in ${allowZero ? "[0, 100]" : "(0, 100]"}, got ${rh}`,
    );
}

/** Saturation vapour pressure e°(T) over liquid water, kPa (FAO-56 eq. 11). */
export function saturationVapourPressure(tempC: number): number {
  checkTemp("temperature", tempC);
  return TETENS_A_KPA * Math.exp((TETENS_B * tempC) / (tempC + TETENS_C_DEGC));
}

/** Actual vapour pressure ea of air at tempC with relative humidity rhPct (0–100 %), kPa. */
export function actualVapourPressure(tempC: number, rhPct: number): number {
  checkRh(rhPct, true);
  return (saturationVapourPressure(tempC) * rhPct) / 100;
}

/** Air VPD: e°(T) − ea, kPa. Zero at 100 % RH. */
export function airVpd(tempC: number, rhPct: number): number {
  checkRh(rhPct, true);
  return saturationVapourPressure(tempC) * (1 - rhPct / 100);
}

/**
 * Leaf VPD: e°(T + leafOffsetC) − ea(T, RH), kPa. The leaf is taken as
 * leafOffsetC warmer than the air (negative = cooler, the usual −1…−3 °C of a
 * transpiring leaf). Can be negative: a leaf colder than the dew point gets wet.
 */
export function leafVpd(tempC: number, rhPct: number, leafOffsetC: number): number {
  if (!Number.isFinite(leafOffsetC) || Math.abs(leafOffsetC) > 20)
    throw new RangeError(`leaf temperature offset must be a finite number of °C within ±20, got ${leafOffsetC}`);
  const leaf = tempC + leafOffsetC;
  checkTemp("leaf temperature", leaf);
  return saturationVapourPressure(leaf) - actualVapourPressure(tempC, rhPct);
}

/** Temperature (°C) at which e°(T) equals eaKpa: the inverse of FAO-56 eq. 11. */
export function dewPointFromVapourPressure(eaKpa: number): number {
  if (!Number.isFinite(eaKpa) || eaKpa <= 0)
    throw new RangeError(`vapour pressure must be a finite number of kPa > 0, got ${eaKpa}`);
  const l = Math.log(eaKpa / TETENS_A_KPA);
  return (TETENS_C_DEGC * l) / (TETENS_B - l);
}

/** Dew point (°C) of air at tempC with relative humidity rhPct; RH 0 has no dew point and is refused. */
export function dewPoint(tempC: number, rhPct: number): number {
  checkRh(rhPct, false);
  return dewPointFromVapourPressure(actualVapourPressure(tempC, rhPct));
}
