"""Measure the device you run on: per-block latency lookup tables and the roofline, through ONNX Runtime.

``blocks`` enumerates a space's block configurations as keyed NetSpec fragments; ``timing``
times ONNX models robustly (warm-up, interleaved rounds, median and MAD outlier rejection) with
the runtime's own session options; ``roofline`` measures peak FLOP/s and copy bandwidth;
``memory`` measures ONNX Runtime's peak activation memory; ``store`` keeps partial results so a
run can resume; ``run`` ties them into a measured ``DeviceProfile``; ``cli`` is ``fleetnas profile``.
"""
