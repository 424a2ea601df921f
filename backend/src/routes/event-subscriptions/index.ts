import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { wakeEventDelivery } from '../../events/delivery-worker.js';
import { versionEtag } from '../../lib/conditional-update.js';
import { IdempotencyHeaders, IdParams, IfMatchHeaders } from '../../lib/http.js';
import { replyIdempotently } from '../../lib/idempotency.js';
import { notFound } from '../../lib/problem.js';
import { assertStorageAvailable } from '../../usage/usage.js';
import { versionedItemRoutes } from '../versioned-resource.js';
import * as subscriptions from './repository.js';
import {
  CreatedEventSubscription,
  CreateEventSubscriptionBody,
  EventDelivery,
  EventDeliveryPage,
  EventSubscription,
  EventSubscriptionPage,
  ListEventDeliveriesQuery,
  ListEventSubscriptionsQuery,
  RotatedEventSubscription,
  UpdateEventSubscriptionBody,
  type CreatedEventSubscriptionDto,
  type EventSubscriptionDto,
} from './schemas.js';

const tags = ['event-subscriptions'];

/**
 * Outbound signed events (API.md, Event subscriptions), the API half: the subscriptions, their
 * signing secrets (shown once, on creation and rotation), and their messages, listed and sent
 * again. The outbox writes the messages and the delivery workers send them (src/events/).
 */
export const eventSubscriptionRoutes: FastifyPluginAsyncZod = async (app) => {
  const settings: subscriptions.EventSubscriptionSettings = { maxPerUser: app.config.eventSubscriptionsPerUser, allow: app.config.engine.http.allow };

  app.get(
    '/event-subscriptions',
    { schema: { tags, summary: 'List event subscriptions (never their secrets)', querystring: ListEventSubscriptionsQuery, response: { 200: EventSubscriptionPage } } },
    async (request) => subscriptions.list(app.database.db, request.user.id, request.query),
  );

  app.post(
    '/event-subscriptions',
    {
      schema: {
        tags,
        summary:
          'Create an event subscription; its signing secret is in this response only (honours Idempotency-Key; ' +
          '409 EVENT_SUBSCRIPTION_LIMIT_REACHED beyond EVENT_SUBSCRIPTIONS_PER_USER)',
        headers: IdempotencyHeaders,
        body: CreateEventSubscriptionBody,
        response: { 201: CreatedEventSubscription },
      },
    },
    async (request, reply) => {
      let secret: string | undefined;
      reply.header('cache-control', 'no-store');
      // The body carries no secret (the service makes it), so the default fingerprint, the body
      // and query as they are, identifies the request.
      return replyIdempotently<EventSubscriptionDto>(
        app.database.db,
        request,
        reply,
        async () => {
          await assertStorageAvailable(app.database.sql, request.user.id, app.config.storageMaxBytes);
          const created = await subscriptions.create(app.database.db, app.keyring, request.user.id, request.body, settings);
          secret = created.secret;
          // What is kept for a replay has no secret in it.
          return { status: 201, body: subscriptions.present(created.row), location: `/api/v1/event-subscriptions/${created.row.id}` };
        },
        (body): CreatedEventSubscriptionDto => (secret === undefined ? body : { ...body, secret }),
      );
    },
  );

  await app.register(
    versionedItemRoutes({
      path: '/event-subscriptions',
      noun: 'event subscription',
      tags,
      schema: EventSubscription,
      patchBody: UpdateEventSubscriptionBody,
      summaries: {
        get: 'Get an event subscription (with its ETag; never its secret)',
        patch: 'Change an event subscription (enabled true re-enables one the service disabled, clearing disabledReason)',
        delete: 'Delete an event subscription and its messages',
      },
      get: subscriptions.get,
      present: subscriptions.present,
      update: (db, userId, id, patch, ifMatch) => subscriptions.update(db, userId, id, patch, ifMatch, settings),
      remove: subscriptions.remove,
    }),
  );

  app.post(
    '/event-subscriptions/:id/rotate-secret',
    {
      schema: {
        tags,
        summary: 'Give an event subscription a new signing secret, in this response only; the previous one also signs for 24 h',
        description:
          'The previous secret (the one current until now) signs beside the new one for 24 h, so receivers can move over; one from an ' +
          'earlier rotation stops signing at once. Honours If-Match, not Idempotency-Key: a replay could not return the secret, which is ' +
          'never stored in plaintext.',
        params: IdParams,
        headers: IfMatchHeaders,
        response: { 200: RotatedEventSubscription },
      },
    },
    async (request, reply) => {
      const rotated = await subscriptions.rotateSecret(app.database.db, app.keyring, request.user.id, request.params.id, request.headers['if-match']);
      if (!rotated) throw notFound('event subscription', request.params.id);
      reply.header('cache-control', 'no-store');
      reply.header('etag', versionEtag(rotated.row));
      return { ...subscriptions.present(rotated.row), secret: rotated.secret };
    },
  );

  app.get(
    '/event-subscriptions/:id/deliveries',
    {
      schema: {
        tags,
        summary: 'List an event subscription’s messages, newest first (filters: status list, type list)',
        params: IdParams,
        querystring: ListEventDeliveriesQuery,
        response: { 200: EventDeliveryPage },
      },
    },
    async (request) => {
      const page = await subscriptions.listDeliveries(app.database.db, request.user.id, request.params.id, request.query);
      if (!page) throw notFound('event subscription', request.params.id);
      return page;
    },
  );

  app.post(
    '/event-deliveries/:id/retry',
    {
      schema: {
        tags,
        summary:
          'Send a delivered or failed message again: 202 with it, pending and due now (409 EVENT_DELIVERY_PENDING while it is pending, ' +
          'EVENT_SUBSCRIPTION_DISABLED while its subscription is disabled)',
        description:
          'The message goes back to pending, due at once; a delivery worker sends it with its same webhook-id (receivers that had it may ' +
          'drop it as a duplicate), then retries it with backoff as any message, until it is 24 h old: an older one gets this one attempt. ' +
          'Its attempts and last outcome stay as they were until then.',
        params: IdParams,
        response: { 202: EventDelivery },
      },
    },
    async (request, reply) => {
      const delivery = await subscriptions.retryDelivery(app.database.db, request.user.id, request.params.id);
      if (!delivery) throw notFound('event delivery', request.params.id);
      // Committed: every process's workers look now rather than at their next poll.
      await wakeEventDelivery(app.bus);
      return reply.code(202).send(delivery);
    },
  );
};
