"""A stand-in for an actor ref or the store link in tests that call one
actor directly: it records what it is told or sent."""


class Recorder:
    def __init__(self):
        self.told = []

    def tell(self, message):
        self.told.append(message)

    def send(self, message):
        self.told.append(message)
