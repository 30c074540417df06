#!/bin/sh
# Installing a package never starts its service here: a build has no init system and must not leave
# daemons behind. Entrypoints start what an image runs. (invoke-rc.d reads 101 as "not allowed".)
exit 101
