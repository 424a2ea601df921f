-- Connections and variables in user_usage, kept as 0014's triggers keep the rest: per statement,
-- from transition tables, each user's row touched once, in user order. Their payload_bytes (the
-- text they store, sealed secrets included) count towards the user's stored bytes.
CREATE FUNCTION "usage_add_settings"("owner" text, "connections" int, "variables" int, "payload_bytes" bigint) RETURNS void
LANGUAGE sql AS $$
  INSERT INTO "user_usage" ("user_id", "connections", "variables", "payload_bytes")
  SELECT "owner", "connections", "variables", "payload_bytes"
   WHERE EXISTS (SELECT 1 FROM "user" u WHERE u."id" = "owner")
  ON CONFLICT ("user_id") DO UPDATE SET
    "connections" = "user_usage"."connections" + excluded."connections",
    "variables" = "user_usage"."variables" + excluded."variables",
    "payload_bytes" = "user_usage"."payload_bytes" + excluded."payload_bytes";
$$;
--> statement-breakpoint
CREATE FUNCTION "usage_settings_changed"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  is_connection boolean := TG_TABLE_NAME = 'connections';
  r record;
BEGIN
  -- A transition table exists only for the operations that have it: INSERT has new_rows, DELETE
  -- old_rows, UPDATE both; each branch names only what its operation has.
  FOR r IN EXECUTE format(
    'SELECT "user_id", sum(n)::int AS n, sum(bytes)::bigint AS bytes FROM (%s) changes GROUP BY "user_id" ORDER BY "user_id"',
    CASE TG_OP
      WHEN 'INSERT' THEN 'SELECT "user_id", 1 AS n, "payload_bytes" AS bytes FROM new_rows'
      WHEN 'DELETE' THEN 'SELECT "user_id", -1 AS n, -"payload_bytes" AS bytes FROM old_rows'
      ELSE 'SELECT "user_id", 0 AS n, "payload_bytes" AS bytes FROM new_rows UNION ALL SELECT "user_id", 0, -"payload_bytes" FROM old_rows'
    END)
  LOOP
    IF r.n <> 0 OR r.bytes <> 0 THEN
      PERFORM "usage_add_settings"(r."user_id", CASE WHEN is_connection THEN r.n ELSE 0 END, CASE WHEN is_connection THEN 0 ELSE r.n END, r.bytes);
    END IF;
  END LOOP;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "usage_connections_inserted" AFTER INSERT ON "connections" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_settings_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_connections_updated" AFTER UPDATE ON "connections" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_settings_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_connections_deleted" AFTER DELETE ON "connections" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_settings_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_variables_inserted" AFTER INSERT ON "variables" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_settings_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_variables_updated" AFTER UPDATE ON "variables" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_settings_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_variables_deleted" AFTER DELETE ON "variables" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_settings_changed"();
