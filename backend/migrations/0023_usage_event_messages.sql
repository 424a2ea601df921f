-- Event messages (outbound deliveries) in user_usage, kept as 0020 keeps webhook deliveries: per
-- statement, from the transition table its operation has, each user's row touched once, in user
-- order. A message's updates (attempts, its last error) change its bytes.
CREATE FUNCTION "usage_event_messages_changed"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  -- The outbox's insert runs in every finish and cancel, and nearly always writes no row: leave at once.
  IF TG_OP = 'DELETE' THEN
    IF NOT EXISTS (SELECT 1 FROM old_rows) THEN RETURN NULL; END IF;
  ELSIF NOT EXISTS (SELECT 1 FROM new_rows) THEN
    RETURN NULL;
  END IF;
  FOR r IN EXECUTE format(
    'SELECT "user_id", sum(n)::int AS n, sum(bytes)::bigint AS bytes FROM (%s) changes GROUP BY "user_id" ORDER BY "user_id"',
    CASE TG_OP
      WHEN 'INSERT' THEN 'SELECT "user_id", 1 AS n, "payload_bytes" AS bytes FROM new_rows'
      WHEN 'DELETE' THEN 'SELECT "user_id", -1 AS n, -"payload_bytes" AS bytes FROM old_rows'
      ELSE 'SELECT "user_id", 0 AS n, "payload_bytes" AS bytes FROM new_rows UNION ALL SELECT "user_id", 0, -"payload_bytes" FROM old_rows'
    END)
  LOOP
    IF r.n <> 0 OR r.bytes <> 0 THEN
      INSERT INTO "user_usage" ("user_id", "event_deliveries", "payload_bytes")
      SELECT r."user_id", r.n, r.bytes
       WHERE EXISTS (SELECT 1 FROM "user" u WHERE u."id" = r."user_id")
      ON CONFLICT ("user_id") DO UPDATE SET
        "event_deliveries" = "user_usage"."event_deliveries" + excluded."event_deliveries",
        "payload_bytes" = "user_usage"."payload_bytes" + excluded."payload_bytes";
    END IF;
  END LOOP;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "usage_event_messages_inserted" AFTER INSERT ON "event_messages" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_event_messages_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_event_messages_updated" AFTER UPDATE ON "event_messages" REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_event_messages_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_event_messages_deleted" AFTER DELETE ON "event_messages" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_event_messages_changed"();
