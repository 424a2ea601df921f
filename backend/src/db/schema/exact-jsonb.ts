import { customType } from 'drizzle-orm/pg-core';

/**
 * A jsonb column that reads back exactly the JSON value stored. postgres.js parses jsonb itself;
 * drizzle's own jsonb column then parses any string it is handed once more, so a stored JSON
 * string that looks like JSON ("42", "{\"a\":1}") would come back as a number or an object. This
 * column takes the driver's value as it is, and writes JSON text as drizzle's jsonb does. For a
 * column whose value may be a top-level string: a variable's value.
 */
export const exactJsonb = customType<{ data: unknown; driverData: unknown }>({
  dataType: () => 'jsonb',
  toDriver: (value) => JSON.stringify(value),
});
