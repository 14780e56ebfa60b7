"""A stand-in for an actor ref or the store link in tests that call one
actor directly: it records what it is told or sent."""


class Recorder:
    def __init__(self):
        self.told = []

    def tell(self, message):
        self.told.append(message)

    def send(self, message):
        self.told.append(message)


class EchoingStore(Recorder):
    """The store link as a device actor sees it: records what is sent and,
    as the store does once a write is durable (Committed.publish, which
    core hands to MqttIO), tells `mqtt` the publications a DeviceWrite
    carries: its commands and the availability its status announces."""

    def __init__(self, mqtt):
        super().__init__()
        self.mqtt = mqtt

    def send(self, message):
        from actors.messages import Publish

        super().send(message)
        for command_id, publication in getattr(message, "publish", ()):
            self.mqtt.tell(Publish(publication, command=command_id is not None))
