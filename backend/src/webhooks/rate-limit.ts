import type { Sql } from '../db/client.js';
import type { SharedCounts } from '../lib/rate-limiter.js';

/**
 * Every replica's requests to each hook (keyed by workflow id) in a window, for the per-hook limit
 * (WEBHOOK_RATE_LIMIT_MAX per RATE_LIMIT_WINDOW_MS). Each request the limit lets through to a
 * hook's check leaves a delivery row (accepted, rejected or duplicate) received in the window, so
 * the rows are the shared count and `add` has nothing to write: it reads them, through
 * webhook_deliveries_workflow_received_idx and at most `max` per hook. A request that stored no
 * row (its headers or body malformed, or the workflow saved meanwhile) counts only where it was
 * taken; one refused for its owner's limits or its size leaves a `rejected` row. The requests a
 * process has in flight are not rows yet: with those of other replicas at the same moment, they
 * are what the replicas together may let through beyond the limit. Delivery rows go with
 * retention: nothing to purge.
 */
export function hookDeliveryCounts(sql: Sql, max: number): SharedCounts {
  return {
    recordedPerRequest: true,
    async add(window, counts) {
      const workflowIds = [...counts.keys()];
      return sql<{ key: string; count: number }[]>`
        select h.workflow_id::text as key,
               (select count(*)::int from (
                  select 1 from webhook_deliveries d
                   where d.workflow_id = h.workflow_id and d.received_at >= ${window.start}::timestamptz
                   limit ${max}) received) as count
          from unnest(${workflowIds}::uuid[]) as h(workflow_id)`;
    },
    async purge() {},
  };
}
