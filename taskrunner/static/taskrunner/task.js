// The task page is static HTML; starting a run is a plain form post.
import { confirmForms } from "./common.js";

confirmForms(document.getElementById("task-page"));
