# The production image: the built JavaScript on Node 24 LTS, production dependencies only, run as
# the unprivileged `node` user. compose.yml runs it as api (this CMD), worker and migrate.
#   docker build -t autonode:local .
# NODE_VERSION is the Node that CI runs the suite on (.ci/run, `node@<this version>` from npm).
ARG NODE_VERSION=24.21.0

FROM node:${NODE_VERSION}-trixie-slim AS build
WORKDIR /app
# The manifests and patches first: the dependency layer is rebuilt only when they change.
# The root postinstall (patch-package, a dev dependency) patches postgres.js during npm ci.
COPY package.json package-lock.json ./
COPY patches ./patches
COPY backend/package.json ./backend/
COPY client/package.json ./client/
RUN npm ci --no-audit --no-fund
COPY . .
# Build, then drop the dev dependencies: pruning keeps the files patch-package already patched
# (an `npm ci --omit=dev` could not run the postinstall without patch-package). The embedded
# database's image is for development only (production refuses the embedded database).
RUN AUTONODE_BUILD_EMBEDDED_IMAGE=false npm run build \
  && npm prune --omit=dev --no-audit --no-fund

FROM node:${NODE_VERSION}-trixie-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
# What the built service loads at run time, owned by root and only readable by the user that runs it.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/backend/package.json ./backend/package.json
COPY --from=build /app/backend/dist ./backend/dist
COPY --from=build /app/backend/migrations ./backend/migrations
WORKDIR /app/backend
USER node
EXPOSE 3000
# Readiness, with Node itself (the slim image has no curl or wget).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --start-interval=1s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/api/ready').then((response) => process.exit(response.ok ? 0 : 1), () => process.exit(1))"]
# Node is PID 1's command itself (no npm, no shell, no entrypoint script), so SIGTERM reaches the
# service's graceful shutdown; the flags are `npm start`'s.
ENTRYPOINT []
CMD ["node", "--max-semi-space-size=64", "dist/server.js"]
