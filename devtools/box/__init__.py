"""The box under test, in one place: the one configuration builder (``config``) and the three
ways to run the firmware against it — as a process driven through its control socket
(``process.Intercom``), in-process on its own event loop with simulated pins
(``in_process.Box``), and whole on fake I/O parts with a virtual clock (``fakes.FakeBox``).
Each module imports only what its way needs (the process harness none of the firmware)."""
