#!/usr/bin/env bash
# Validates every Kong declarative config the project generates or keeps as golden output with
# shared/tools/kong-validate: kong.yaml (Kong OSS, DB-less) with --strict-plugins --oss-dbless,
# kong.enterprise.yaml with --strict-plugins --allow-plugin openid-connect (the validator has no
# schema for that Enterprise plugin; our typed checks cover its config). The Enterprise file is in
# Kong's own DB-less format, whose top-level consumer_group_consumers decK's schema does not know:
# the validator reads its decK form (memberships back under consumers[].groups, the inverse of
# `deck file format`; kong_oracle::deck_form does the same in the test suite). Checks all files,
# then fails if any was rejected.
# SHARED (default: <repo>/../shared) locates the shared tools. CI runs this on top of the test
# suite, whose own oracle (crates/test-support/src/kong_oracle.rs) needs nothing outside the
# repository; this script needs ../shared and python3 with PyYAML and jsonschema (installed here
# when missing).
set -euo pipefail
root=$(git rev-parse --show-toplevel)
cd "$root"
SHARED=${SHARED:-$root/../shared}
validator=$SHARED/tools/kong-validate

say() { printf 'validate-kong: %s\n' "$*"; }

# Every YAML file in a kong/ dir under generated/ or a golden case's expected output.
roots=()
[[ -d generated ]] && roots+=(generated)
for expected in tests/golden/*/expected; do
    [[ -d $expected ]] && roots+=("$expected")
done
files=()
if ((${#roots[@]})); then
    mapfile -t files < <(find "${roots[@]}" -path '*/kong/*' \( -name '*.yaml' -o -name '*.yml' \) -type f | LC_ALL=C sort)
fi

if ((${#files[@]} == 0)); then
    if [[ -d generated ]]; then
        say "ERROR: generated/ exists but holds no kong/*.yaml file; run \`kombiform build\`"
        exit 1
    fi
    say "note: no generated/ dir yet and no golden Kong files: nothing to validate"
    exit 0
fi

if [[ ! -x $validator ]]; then
    say "ERROR: $validator not found or not executable (set SHARED to the shared/ dir)"
    exit 1
fi

PY=${PYTHON:-python3}
missing_py=()
"$PY" -c 'import yaml' >/dev/null 2>&1 || missing_py+=(pyyaml)
"$PY" -c 'import jsonschema' >/dev/null 2>&1 || missing_py+=(jsonschema)
if ((${#missing_py[@]})); then
    say "pip install ${missing_py[*]} (the validator's modules)"
    "$PY" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${missing_py[@]}"
fi

# The decK form of a Kong-native DB-less file (see the header), written to $2.
deck_form() {
    "$PY" - "$1" "$2" <<'PYEOF'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
members = doc.pop("consumer_group_consumers", None) or []
by_name = {c.get("username"): c for c in doc.get("consumers") or []}
left = []
for m in members:
    c = by_name.get(m.get("consumer"))
    if c is None:
        left.append(m)
    else:
        c.setdefault("groups", []).append({"name": m.get("consumer_group")})
if left:
    doc["consumer_group_consumers"] = left
yaml.safe_dump(doc, open(sys.argv[2], "w"), sort_keys=False)
PYEOF
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=()
count=0
for file in "${files[@]}"; do
    case $(basename "$file") in
        kong.yaml) flags=(--strict-plugins --oss-dbless) ;;
        kong.enterprise.yaml) flags=(--strict-plugins --allow-plugin openid-connect) ;;
        *)
            say "ERROR: $file: unknown Kong file name; name it kong.yaml (OSS) or" \
                "kong.enterprise.yaml, or teach scripts/validate-kong.sh which checks it needs"
            failed+=("$file")
            continue
            ;;
    esac
    count=$((count + 1))
    checked=$file
    if [[ $(basename "$file") == kong.enterprise.yaml ]]; then
        checked=$tmp/$count.deck.yaml
        deck_form "$file" "$checked"
        say "$file (its decK form) ${flags[*]}"
    else
        say "$file ${flags[*]}"
    fi
    if ! "$validator" "$checked" "${flags[@]}"; then
        failed+=("$file")
    fi
done

if ((${#failed[@]})); then
    say "ERROR: ${#failed[@]} Kong file(s) rejected:"
    printf '  %s\n' "${failed[@]}"
    exit 1
fi
say "all $count Kong file(s) accepted"
