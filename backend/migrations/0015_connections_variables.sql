CREATE TABLE "connections" (
	"id" uuid PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"name" text NOT NULL,
	"description" text DEFAULT '' NOT NULL,
	"base_url" text NOT NULL,
	"headers" jsonb DEFAULT '{}'::jsonb NOT NULL,
	"auth_type" text DEFAULT 'none' NOT NULL,
	"auth_username" text,
	"auth_name" text,
	"secret_key_id" text,
	"secret_ciphertext" text,
	"version" integer DEFAULT 1 NOT NULL,
	"last_used_at" timestamp (3) with time zone,
	"payload_bytes" integer GENERATED ALWAYS AS (octet_length(name) + octet_length(description) + octet_length(base_url) + octet_length(headers::text) + coalesce(octet_length(secret_ciphertext), 0)) STORED NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "variables" (
	"id" uuid PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"key" text NOT NULL,
	"value" jsonb,
	"secret" boolean DEFAULT false NOT NULL,
	"secret_key_id" text,
	"secret_ciphertext" text,
	"version" integer DEFAULT 1 NOT NULL,
	"payload_bytes" integer GENERATED ALWAYS AS (octet_length(key) + coalesce(octet_length(value::text), 0) + coalesce(octet_length(secret_ciphertext), 0)) STORED NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "connections" ADD CONSTRAINT "connections_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "variables" ADD CONSTRAINT "variables_user_id_user_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."user"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE UNIQUE INDEX "connections_user_name_idx" ON "connections" USING btree ("user_id","name");--> statement-breakpoint
CREATE INDEX "connections_user_created_idx" ON "connections" USING btree ("user_id","created_at","id");--> statement-breakpoint
CREATE INDEX "connections_user_updated_idx" ON "connections" USING btree ("user_id","updated_at","id");--> statement-breakpoint
CREATE INDEX "connections_secret_key_idx" ON "connections" USING btree ("secret_key_id");--> statement-breakpoint
CREATE UNIQUE INDEX "variables_user_key_idx" ON "variables" USING btree ("user_id","key");--> statement-breakpoint
CREATE INDEX "variables_user_created_idx" ON "variables" USING btree ("user_id","created_at","id");--> statement-breakpoint
CREATE INDEX "variables_user_updated_idx" ON "variables" USING btree ("user_id","updated_at","id");--> statement-breakpoint
CREATE INDEX "variables_secret_key_idx" ON "variables" USING btree ("secret_key_id");