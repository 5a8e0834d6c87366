# One image for every process of the topology (DEPLOY.md): the Dagster webserver, the Dagster daemon
# (which also runs the runs, with the default run launcher), the webhook receiver, and, for a demo,
# the Zoho and Moodle simulators. The command picks one (deploy/entrypoint.sh):
#
#   docker run … sync-pipelines webserver     dagster-webserver on :3000
#   docker run … sync-pipelines daemon        dagster-daemon run (schedules, sensors, run queue, runs)
#   docker run … sync-pipelines receiver      python -m sync_pipelines.webhooks on :8780
#   docker run … sync-pipelines sandbox       the simulators on :8770 (Zoho) and :8771 (Moodle)
#   docker run … sync-pipelines sync-pipelines status …   anything else is run as given
#
# For Kubernetes (DEPLOY.md), the run pods load the chart's instance, which names the K8sRunLauncher
# and an object-storage compute log manager: build with their libraries, pinned to the release
# pyproject.toml pins Dagster to, e.g.
#   docker build --build-arg EXTRA_PACKAGES="dagster-k8s==0.29.27 dagster-aws==0.29.27" .
#
# Not in the image: the Moodle plugin (moodle_plugin/, installed on the Moodle server), the tests,
# the benchmarks, tenants.yaml and every secret (mounted and passed in at run time).

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with the package (pure Python: nothing is compiled) ---------------------
FROM ${PYTHON_IMAGE} AS build
ARG EXTRA_PACKAGES=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip
WORKDIR /src
# The dependencies first (pinned in pyproject.toml), so that a code change does not reinstall them.
COPY pyproject.toml README.md ./
RUN touch sync_pipelines/__init__.py \
 && /opt/venv/bin/pip install . ${EXTRA_PACKAGES} \
 && /opt/venv/bin/pip uninstall -y sync_pipelines
COPY sync_pipelines ./sync_pipelines
RUN /opt/venv/bin/pip install --no-deps .

# --- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG APP_UID=10001
# The user the processes run as (never root), and the folders they write: Dagster's home, the drop
# files, the compute logs, the Zoho token cache (0700: the token store refuses anything looser).
# A named volume mounted on one of them takes its owner and mode from here.
RUN groupadd --system --gid ${APP_UID} dagster \
 && useradd --system --uid ${APP_UID} --gid dagster --home-dir /opt/dagster --shell /usr/sbin/nologin dagster \
 && mkdir -p /opt/dagster/home /opt/dagster/app /etc/sync-pipelines \
      /var/lib/sync-pipelines/drop /var/lib/sync-pipelines/compute_logs \
      /var/lib/sync-pipelines/zoho_tokens /var/lib/sync-pipelines/local \
 && chown -R dagster:dagster /opt/dagster/home /var/lib/sync-pipelines \
 && chmod 0700 /var/lib/sync-pipelines/zoho_tokens
COPY --from=build /opt/venv /opt/venv
COPY deploy/dagster.postgres.yaml /opt/dagster/home/dagster.yaml
COPY workspace.yaml /opt/dagster/app/workspace.yaml
COPY deploy/entrypoint.sh /usr/local/bin/sync-pipelines-entrypoint
RUN chmod 0755 /usr/local/bin/sync-pipelines-entrypoint

# What every process reads (DEPLOY.md lists them all). The PostgreSQL connection (DAGSTER_PG_*),
# WAREHOUSE_URL and the schools' secrets have no default: they come with `docker run -e` or compose.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DAGSTER_HOME=/opt/dagster/home \
    DAGSTER_PG_PORT=5432 \
    DAGSTER_COMPUTE_LOG_DIR=/var/lib/sync-pipelines/compute_logs \
    DAGSTER_MAX_CONCURRENT_RUNS=4 \
    SYNC_TENANTS_FILE=/etc/sync-pipelines/tenants.yaml \
    SYNC_DROP_DIR=/var/lib/sync-pipelines/drop \
    SYNC_TOKEN_DIR=/var/lib/sync-pipelines/zoho_tokens \
    SYNC_LOCAL_DIR=/var/lib/sync-pipelines/local

USER dagster
WORKDIR /opt/dagster/app
EXPOSE 3000 8780
ENTRYPOINT ["sync-pipelines-entrypoint"]
CMD ["webserver"]
