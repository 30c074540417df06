"""The test bench, apart from the product: the offline image kit and the simulated VPS."""
