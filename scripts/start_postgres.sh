#!/usr/bin/env bash
# Start a PostgreSQL server for distributed Optuna searches and create a database and a user for them.
#
#   sudo scripts/start_postgres.sh                 # database "amc", user "amc", local connections only
#   sudo AMC_DB_ALLOW=10.0.0.0/24 scripts/start_postgres.sh   # also accept workers from that network
#   sudo scripts/start_postgres.sh --stop          # stop the server again
#
# Needs Debian/Ubuntu's server package (apt-get install postgresql) and, on every worker machine,
# the Python driver (pip install 'amc[postgres]', i.e. psycopg2-binary). Idempotent: a second run
# keeps the database and resets the password.
#
# Environment: AMC_DB_NAME (amc), AMC_DB_USER (amc), AMC_DB_PASSWORD (default: a random one, printed),
# AMC_DB_ALLOW (CIDR of the worker machines; unset: this machine only), AMC_DB_PORT (the cluster's).
#
# Then run the workers, one per process / machine, each with its own run dir and seed (the study
# ends when it holds --episodes trials in all):
#
#   export PGPASSWORD=...    # or a line in ~/.pgpass; keep the password out of the URL (it is saved in config.yaml)
#   amc search --agent tpe --checkpoint reference/lenet5-fashion-mnist.pt --dataset fashion-mnist \
#     --data-dir DIR --target macs=0.5 --episodes 300 \
#     --storage postgresql://amc@DBHOST:5432/amc --study-name lenet5-macs05 \
#     --run-dir runs/tpe-w1 --seed 1
set -euo pipefail

DB=${AMC_DB_NAME:-amc}
DB_USER=${AMC_DB_USER:-amc}
ALLOW=${AMC_DB_ALLOW:-}

die() { echo "error: $*" >&2; exit 2; }
[[ $DB =~ ^[a-z_][a-z0-9_]*$ && $DB_USER =~ ^[a-z_][a-z0-9_]*$ ]] \
  || die "AMC_DB_NAME and AMC_DB_USER must be lower-case identifiers (letters, digits, _)"
command -v pg_lsclusters >/dev/null || die "PostgreSQL is not installed: apt-get install postgresql"
[[ $(id -u) -eq 0 ]] || die "run as root (sudo): the server runs as the postgres system user"
as_postgres() { runuser -u postgres -- "$@"; }

read -r VER CLUSTER PORT STATUS _ < <(pg_lsclusters -h | head -n 1) || true
if [[ -z ${VER:-} ]]; then  # no cluster yet: create the distribution's default one
  VER=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  pg_createcluster "$VER" main
  read -r VER CLUSTER PORT STATUS _ < <(pg_lsclusters -h | head -n 1)
fi
PORT=${AMC_DB_PORT:-$PORT}

if [[ ${1:-} == --stop ]]; then
  pg_ctlcluster "$VER" "$CLUSTER" stop && echo "stopped PostgreSQL $VER/$CLUSTER"
  exit 0
fi

if [[ -n $ALLOW ]]; then  # accept the workers' machines (password auth)
  pg_conftool "$VER" "$CLUSTER" set listen_addresses '*'
  HBA=/etc/postgresql/$VER/$CLUSTER/pg_hba.conf
  LINE="host    $DB    $DB_USER    $ALLOW    scram-sha-256"
  grep -qxF "$LINE" "$HBA" || echo "$LINE" >> "$HBA"
  [[ $STATUS == online ]] && pg_ctlcluster "$VER" "$CLUSTER" restart
fi
[[ $(pg_lsclusters -h | awk -v c="$CLUSTER" '$2 == c {print $4}') == online ]] || pg_ctlcluster "$VER" "$CLUSTER" start

PASSWORD=${AMC_DB_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}
psql_() { as_postgres psql -p "$PORT" -v ON_ERROR_STOP=1 -qtA "$@"; }
if [[ $(psql_ -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'") != 1 ]]; then
  psql_ -v pw="$PASSWORD" <<< "CREATE ROLE $DB_USER LOGIN PASSWORD :'pw';"
else
  psql_ -v pw="$PASSWORD" <<< "ALTER ROLE $DB_USER PASSWORD :'pw';"
fi
if [[ $(psql_ -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") != 1 ]]; then
  psql_ -c "CREATE DATABASE $DB OWNER $DB_USER"
fi

HOST=localhost
[[ -n $ALLOW ]] && HOST=$(hostname -f 2>/dev/null || hostname)
cat <<EOF
PostgreSQL $VER/$CLUSTER is running on port $PORT; database "$DB", user "$DB_USER".

On each worker machine:
  pip install 'amc[postgres]'
  export PGPASSWORD='$PASSWORD'
  amc search --agent tpe ... --storage postgresql://$DB_USER@$HOST:$PORT/$DB --study-name NAME \\
    --run-dir runs/NAME-w1 --seed 1 --episodes 300
Stop the server: sudo $0 --stop
EOF
