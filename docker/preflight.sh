#!/bin/sh
# compose's preflight: every other container waits for this one to succeed. It refuses to start
# anything with a password that is no secret: unset, or one of .env.example's change-me
# placeholders, known to anyone who reads the repository (compose's ${NAME:?} cannot tell a
# placeholder from a password, and docker/initdb runs only on a volume's first start, so a
# placeholder that got in once would stay). Passwords must be letters and digits: compose writes
# them into URLs unencoded. The image's superuser must not take the name of one of the roles
# initdb/03-roles.sql creates. One line per refused variable, never a value.
status=0
for name in POSTGRES_PASSWORD POSTGRES_OWNER_PASSWORD POSTGRES_SERVICE_PASSWORD POSTGRES_TEST_PASSWORD; do
    eval "value=\${$name:-}"
    case "$value" in
        "") echo "preflight: $name is not set: run \`just env-file\` to write .env with fresh passwords" >&2; status=1 ;;
        change-me*) echo "preflight: $name is the example's placeholder password: run \`just env-file\` (with no .env) for fresh ones, or set a real one in .env" >&2; status=1 ;;
        *[!A-Za-z0-9]*) echo "preflight: $name holds a character other than a letter or digit: compose puts it in URLs unencoded" >&2; status=1 ;;
    esac
done
case "${POSTGRES_USER:-}" in
    counseling | counseling_owner) echo "preflight: POSTGRES_USER names a role initdb/03-roles.sql creates: choose another superuser name (postgres)" >&2; status=1 ;;
esac
exit $status
