/**
 * Amounts are int64 on the wire. JavaScript numbers are exact only up to 2^53-1, so the
 * authority accepts amounts in [0, MAX_AMOUNT] and refuses (400) any request that would
 * need a larger one, and refuses any ledger mutation whose result would leave that range.
 * Nothing is ever rounded silently.
 */
export const MAX_AMOUNT = Number.MAX_SAFE_INTEGER;

export const UNITS = ['USD_MICROCENTS', 'TOKENS', 'CREDITS', 'RISK_POINTS'] as const;
export type Unit = (typeof UNITS)[number];

export interface Amount {
  unit: Unit;
  amount: number;
}

export const amount = (unit: Unit, value: number): Amount => ({ unit, amount: value });

/** True when v is an integer that every ledger field can hold exactly. */
export const isExact = (v: number): boolean => Number.isSafeInteger(v);
