# The Docker engine's and Compose's versions, or what each says instead (no engine, no plugin).
sec docker
docker version --format '{{.Server.Version}}' 2>&1
sec compose
docker compose version --short 2>&1
true
