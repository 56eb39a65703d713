#!/bin/sh
# compose's preflight: every other container waits for this one to succeed. It refuses to start
# anything with a password that is no secret: unset, or one of .env.example's change-me
# placeholders, known to anyone who reads the repository (compose's ${NAME:?} cannot tell a
# placeholder from a password, and docker/initdb runs only on a volume's first start, so a
# placeholder that got in once would stay). One line per refused variable, never a value.
status=0
for name in POSTGRES_PASSWORD POSTGRES_OWNER_PASSWORD POSTGRES_SERVICE_PASSWORD POSTGRES_TEST_PASSWORD; do
    eval "value=\${$name:-}"
    case "$value" in
        "") echo "preflight: $name is not set: run \`just env-file\` to write .env with fresh passwords" >&2; status=1 ;;
        change-me*) echo "preflight: $name is the example's placeholder password: run \`just env-file\` (with no .env) for fresh ones, or set a real one in .env" >&2; status=1 ;;
    esac
done
exit $status
