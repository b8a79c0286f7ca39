class Config:
    def __init__(self, path):
        self.path = path
        self.values = {}

    def get(self, key):
        <cursor>
