# `cmake --install BUILD [--prefix P] [--strip]`: what a package or an image holds (docs/deploy.md).
#
#   bin/floodgate                        the server
#   share/floodgate/examples/            the example configs (examples/)
#   share/floodgate/systemd/             floodgate.default, the example /etc/default/floodgate
#   share/floodgate/prometheus/, grafana/  alert rules and dashboards, when deploy/ has them
#   share/doc/floodgate/                 README.md, CHANGELOG.md, LICENSE and docs/
#   lib/systemd/system/floodgate.service the systemd unit (deploy/systemd/)
#
# The unit names /usr/bin/floodgate, /etc/floodgate and /var/lib/floodgate: install with
# --prefix /usr for it to run as is. Nothing is installed under /etc: the config is the
# operator's. tests/install_test.sh checks the tree.
include(GNUInstallDirs)

install(TARGETS floodgate RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/examples/
        DESTINATION ${CMAKE_INSTALL_DATADIR}/floodgate/examples)
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/floodgate.default
        DESTINATION ${CMAKE_INSTALL_DATADIR}/floodgate/systemd)
# Debian's place for units shipped by packages, under the prefix (not CMAKE_INSTALL_LIBDIR,
# which is lib/x86_64-linux-gnu with the prefix /usr).
install(FILES ${PROJECT_SOURCE_DIR}/deploy/systemd/floodgate.service
        DESTINATION lib/systemd/system)
# Alert rules and dashboards: optional, so that this file does not depend on when they land.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/prometheus/
        DESTINATION ${CMAKE_INSTALL_DATADIR}/floodgate/prometheus OPTIONAL)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/deploy/grafana/
        DESTINATION ${CMAKE_INSTALL_DATADIR}/floodgate/grafana OPTIONAL)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/CHANGELOG.md
              ${PROJECT_SOURCE_DIR}/LICENSE
        DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR})
