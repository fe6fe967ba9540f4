"""Python stubs generated from ``scaler/keda/externalscaler.proto`` by ``make proto``.

Do not edit the ``externalscaler_pb2*`` files by hand: regenerate them, and commit
the result (a test checks that regenerating changes nothing).
"""
