"""Operations: the MQTT control plane (:mod:`.mqtt`, :mod:`.schema`) and Prometheus
metrics (:mod:`.metrics`).

Importing this package loads nothing heavy; import the submodules you need.
"""
