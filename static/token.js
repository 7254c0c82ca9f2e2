// With --token, the API answers 401: ask for the token (once), keep it for this tab only
// (sessionStorage) and send it as `Authorization: Bearer` on every API call. Shared by the
// pages: `src/http/pages.rs` puts this file where a page says /*@token.js*/.
const TOKEN_KEY = "ingestd-token";
async function api(url, init = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = new Headers(init.headers || {});
  if (token) headers.set("Authorization", "Bearer " + token);
  const response = await fetch(url, { ...init, headers });
  // An answer to a request sent before the token changed says nothing about the new one.
  if (response.status === 401 && token === sessionStorage.getItem(TOKEN_KEY)) askForToken(token);
  return response;
}
function askForToken(refused) {
  if (refused) sessionStorage.removeItem(TOKEN_KEY);
  const form = document.getElementById("token-form");
  if (!form.hidden) return;
  document.getElementById("token-note").textContent = refused ? "that token was refused; " : "";
  form.hidden = false;
  document.getElementById("token").focus();
}
document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem(TOKEN_KEY, input.value.trim());
  input.value = "";
  document.getElementById("token-form").hidden = true;
  window.dispatchEvent(new Event("ingestd-token"));
});
