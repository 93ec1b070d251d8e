"""placeholder, replaced below"""
class DynamicLinker:
    def __init__(self, iso):
        self.iso = iso
