# Sourced by tools/setup.sh and tools/fuzz.sh (bash): installs the Debian/Ubuntu packages that
# are not installed yet, in one apt-get call, as root or through sudo.
#   apt_install_missing LABEL PACKAGE...
# LABEL starts the line saying what is installed (on stderr); nothing happens when every
# package is already there.
apt_install_missing() {
  local label=$1
  shift
  local missing=() p
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "$label: installing ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
