"""The pure-Python core shared by the engine and the simulator: no torch here."""
