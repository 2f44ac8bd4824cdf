# syntax=docker/dockerfile:1
# gatewire image: one image for every role (proxy, appserver, `up`), chosen by
# the command. Build stage compiles TypeScript with dev dependencies; the
# runtime stage has production dependencies and the compiled dist/ only.

FROM node:24-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-fund --no-audit
COPY tsconfig.json tsconfig.build.json ./
COPY protocol ./protocol
COPY proxy ./proxy
COPY appserver ./appserver
COPY supervisor ./supervisor
COPY cli ./cli
COPY examples ./examples
COPY deploy ./deploy
COPY bin ./bin
RUN npm run build

FROM node:24-slim AS runtime
# tini as PID 1: forwards SIGTERM from `docker stop` to gatewire and reaps
# zombies; gatewire then drains (proxy) or finishes in-flight requests (appserver).
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
# --omit=optional leaves out tsx (and esbuild, 12 MB): the image runs the
# compiled dist/ on Node 24, which never loads it. tsx is an optional dependency
# for a checkout on Node 20 and for apps whose TypeScript Node cannot strip
# (enums, namespaces...): an image serving such an app installs it itself.
# --ignore-scripts: dist/ comes from the build stage, not from `prepare`.
RUN npm ci --omit=dev --omit=optional --ignore-scripts --no-fund --no-audit && npm cache clean --force
# bin/gatewire.js runs dist/cli/main.js when the TypeScript sources are absent (they are, here).
COPY --from=build /app/dist ./dist
COPY bin ./bin
# Socket directory of the shared-volume variant: a fresh named volume mounted
# here takes this directory's owner, so the `node` user can create the socket.
RUN mkdir -p /run/gatewire && chown node:node /run/gatewire
# The `node` user (uid 1000) comes with the official image.
USER node
EXPOSE 8080 9000
# Probes the proxy's admin /healthz by default (the `up` and `proxy` roles);
# docker-compose.yml gives the appserver role a uwsgi probe instead.
HEALTHCHECK --interval=10s --timeout=6s --start-period=15s --retries=3 \
  CMD ["node", "/app/dist/deploy/healthcheck.js"]
# node, not the bin's shebang, starts gatewire here: the shebang's V8 flags
# (cli/node-flags.ts says why) are repeated, and a test keeps them equal.
ENTRYPOINT ["/usr/bin/tini", "--", "node", "--max-semi-space-size=4", "--no-maglev", "--no-allocation-site-pretenuring", "--no-concurrent-array-buffer-sweeping", "/app/bin/gatewire.js"]
# The embedded default, reachable from outside the container.
CMD ["up", "--host", "0.0.0.0"]
