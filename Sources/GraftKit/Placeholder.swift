import GraftCore
import CLibunwind
