-- Webhook deliveries in user_usage, kept as 0014's and 0017's triggers keep the rest: per
-- statement, from the transition table its operation has, each user's row touched once, in user
-- order. Deliveries are never updated.
CREATE FUNCTION "usage_deliveries_changed"() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  r record;
BEGIN
  FOR r IN EXECUTE format(
    'SELECT "user_id", sum(n)::int AS n, sum(bytes)::bigint AS bytes FROM (%s) changes GROUP BY "user_id" ORDER BY "user_id"',
    CASE TG_OP
      WHEN 'INSERT' THEN 'SELECT "user_id", 1 AS n, "payload_bytes" AS bytes FROM new_rows'
      ELSE 'SELECT "user_id", -1 AS n, -"payload_bytes" AS bytes FROM old_rows'
    END)
  LOOP
    INSERT INTO "user_usage" ("user_id", "webhook_deliveries", "payload_bytes")
    SELECT r."user_id", r.n, r.bytes
     WHERE EXISTS (SELECT 1 FROM "user" u WHERE u."id" = r."user_id")
    ON CONFLICT ("user_id") DO UPDATE SET
      "webhook_deliveries" = "user_usage"."webhook_deliveries" + excluded."webhook_deliveries",
      "payload_bytes" = "user_usage"."payload_bytes" + excluded."payload_bytes";
  END LOOP;
  RETURN NULL;
END $$;
--> statement-breakpoint
CREATE TRIGGER "usage_deliveries_inserted" AFTER INSERT ON "webhook_deliveries" REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_deliveries_changed"();
--> statement-breakpoint
CREATE TRIGGER "usage_deliveries_deleted" AFTER DELETE ON "webhook_deliveries" REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION "usage_deliveries_changed"();
